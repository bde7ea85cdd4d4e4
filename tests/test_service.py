"""The product end to end: EmbedClient → real Redis → 2 real worker processes under the supervisor."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import redis
from rq import Queue

from embedq import EmbedClient, InvalidInput, JobFailed, JobLost, JobNotFound, JobTimeout
from embedq.broker.jobs import EMBED_TASK, MsgpackSerializer
from embedq.broker.rq_private.records import result_stream_key
from embedq.worker.supervisor.spawn import embedq_command, settings_env
from tests.conftest import counter, lanes
from tests.test_hostile_payloads import job_tuple, push_raw

BATCHES = [
    [f"text {j} of batch {i}: " + "word " * ((i * 7 + j * 13) % 60) for j in range(1 + i % 9)] for i in range(30)
]


def test_round_trip_through_two_workers_in_input_order(service, encoder):
    client = service.client
    job_ids = client.submit_many(BATCHES)
    results = [client.wait(job_id, timeout=60) for job_id in job_ids]
    for batch, job_id, result in zip(BATCHES, job_ids, results):
        assert result.job_id == job_id
        assert result.embeddings.shape == (len(batch), 384)
        np.testing.assert_allclose(result.embeddings, encoder.encode(batch).vectors, atol=1e-5)
        assert result.usage["texts"] == len(batch)
        assert result.model == "all-MiniLM-L6-v2"
        assert set(result.timings) == {"queue_ms", "tokenize_ms", "infer_ms", "pool_ms", "total_ms"}
        assert result.timings["total_ms"] >= result.timings["infer_ms"] > 0
    assert len({result.worker for result in results}) == 2, "both workers should have taken jobs"
    assert client.status(job_ids[0]) == "finished"


def test_a_result_is_kept_for_result_ttl(service):
    job_id = service.client.submit(["kept for RESULT_TTL seconds"])
    service.client.wait(job_id, timeout=30)
    ttl = service.client.connection.ttl(result_stream_key(job_id))
    assert service.settings.result_ttl - 5 <= ttl <= service.settings.result_ttl


def test_each_workers_jobs_done_grows_by_the_results_that_name_it(service):
    before = {w["name"]: int(w["jobs_done"]) for w in service.client.stats()["workers"]}
    results = [service.client.wait(job_id, timeout=60) for job_id in service.client.submit_many(BATCHES)]
    after = {w["name"]: int(w["jobs_done"]) for w in service.client.stats()["workers"]}
    assert set(after) == set(before)
    for name in before:
        assert after[name] - before[name] == sum(result.worker == name for result in results), name


def test_an_idle_fleet_wakes_the_worker_that_went_idle_last(service):
    """Its caches are the warmest: one text at a time goes to the same worker, not to each in turn."""
    served = []
    for number, pause in enumerate(
        [0.05] * 6 + [1.2] * 3
    ):  # every worker waiting; past DOORBELL_WAIT, each looked again
        text = f"who serves after {pause} s ({number})"  # each new: none is answered from the cache
        served.append(service.client.wait(service.client.submit([text]), timeout=30).worker)
        time.sleep(pause)
    assert len(set(served[1:])) == 1, f"one text at a time went to {served}"


def test_an_instruction_reaches_the_worker_through_the_queue(service, encoder):
    task = "Given a web search query, retrieve relevant passages"
    texts = ["how do I reverse a list in python"]
    through_queue = service.client.embed(texts, instruction=task, timeout=30)
    np.testing.assert_allclose(through_queue, encoder.encode(texts, instruction=task).vectors, atol=1e-5)
    assert not np.allclose(through_queue, encoder.encode(texts).vectors, atol=1e-3)


def test_embed_returns_vectors_and_metrics_are_written(service, encoder):
    before = service.client.stats()["counters"]
    vectors = service.client.embed(["one query", "and another"], timeout=30)
    np.testing.assert_allclose(vectors, encoder.encode(["one query", "and another"]).vectors, atol=1e-5)
    stats = service.client.stats()
    assert stats["counters"]["jobs"] - before.get("jobs", 0) == 1
    assert stats["counters"]["texts"] - before.get("texts", 0) == 2
    assert {"queue_ms", "infer_ms", "total_ms"} <= set(stats["lanes"]["interactive"]["percentiles"])
    assert all(worker["providers"] == "CPUExecutionProvider" for worker in stats["workers"])
    assert len(stats["workers"]) == 2


def test_status_and_result_of_an_unknown_job(service):
    assert service.client.status("no-such-job") == "unknown"
    with pytest.raises(JobNotFound):
        service.client.result("no-such-job")


def test_wait_times_out_by_its_deadline_when_no_worker_listens(service):
    idle = EmbedClient(settings=service.settings.model_copy(update={"queue": "nobody-listens"}))
    job_id = idle.submit(["waiting forever"])
    assert idle.status(job_id) == "queued"
    assert idle.result(job_id) is None
    started = time.monotonic()
    with pytest.raises(JobTimeout, match="did not finish within 0.5 s"):
        idle.wait(job_id, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 2.0
    lanes(idle)["interactive"].empty()


def test_a_payload_that_bypasses_the_client_is_refused_by_the_worker(service):
    queue = Queue(service.settings.queue, connection=service.client.connection, serializer=MsgpackSerializer)
    bad = queue.enqueue_call(EMBED_TASK, args=({"v": 1, "texts": ["ok", 42]},), retry=None)
    with pytest.raises(JobFailed, match=r"texts\[1\] must be a str, got int"):
        service.client.wait(bad.id, timeout=30)
    assert service.client.embed(["the worker still serves"], timeout=30).shape == (1, 384)


def test_a_job_naming_another_function_is_refused_and_nothing_runs(service, tmp_path):
    marker = tmp_path / "pwned"
    queue = Queue(service.settings.queue, connection=service.client.connection, serializer=MsgpackSerializer)
    failed_before = counter(service.client, "failed_attempts")
    evil = queue.enqueue_call("os.system", args=(f"touch {marker}",))
    with pytest.raises(JobFailed, match="ForbiddenTask: refusing job .* it names 'os.system'"):
        service.client.wait(evil.id, timeout=30)
    assert not marker.exists()
    assert service.client.embed(["still serving"], timeout=30).shape == (1, 384)
    assert counter(service.client, "failed_attempts") - failed_before == 1


def test_a_killed_worker_is_restarted_by_the_supervisor(service):
    before = service.wait_for_workers(2)
    victim = before[0]["pid"]
    os.kill(int(victim), signal.SIGKILL)
    after = service.wait_for_workers(2, exclude_pids=frozenset({victim}), timeout=60)
    assert victim not in {worker["pid"] for worker in after}
    assert f"(pid {victim}) killed by SIGKILL" in service.output()
    assert service.client.embed(["after the restart"], timeout=30).shape == (1, 384)


def test_cli_embed_status_and_stats(service):
    env = settings_env(service.settings)
    run = subprocess.run(
        [*embedq_command(), "embed", "--json", "hello", "world"], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)
    assert np.array(record["embeddings"]).shape == (2, 384)
    status = subprocess.run(
        [*embedq_command(), "status", record["job_id"]], capture_output=True, text=True, env=env, timeout=60
    )
    assert status.stdout.strip() == "finished"
    stats = subprocess.run([*embedq_command(), "stats"], capture_output=True, text=True, env=env, timeout=60)
    assert "workers alive: 2" in stats.stdout
    assert "infer_ms" in stats.stdout and "p95" in stats.stdout


def test_dimensions_above_the_served_model_are_refused_before_enqueueing(service):
    before = lanes(service.client)["interactive"].count
    with pytest.raises(InvalidInput, match="dimensions=385 is more than the model's 384"):
        service.client.submit(["x"], dimensions=385)
    assert lanes(service.client)["interactive"].count == before
    assert service.client.embed(["x"], dimensions=384).shape == (1, 384)
    assert service.client.embed(["x"], dimensions=32).shape == (1, 32)


def test_the_result_says_how_many_texts_were_truncated(service):
    result = service.client.wait(service.client.submit(["short", "long " * 400, "also short"]), timeout=30)
    assert result.usage["truncated"] == 1
    assert result.usage["tokens"] <= 256 + 2 * 10


def test_wait_many_returns_every_result_in_order_and_rereads_finished_jobs_in_one_round_trip(service, encoder):
    client = service.client
    job_ids = client.submit_many(BATCHES)
    results = client.wait_many(job_ids, timeout=60)
    assert [result.job_id for result in results] == job_ids
    for batch, result in zip(BATCHES, results):
        np.testing.assert_allclose(result.embeddings, encoder.encode(batch).vectors, atol=1e-5)
    sends = []

    class Counting(redis.Connection):
        def send_packed_command(self, command, check_health=True):
            sends.append(command)
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(service.settings.redis_url, connection_class=Counting)
    counted = EmbedClient(settings=service.settings, connection=redis.Redis(connection_pool=pool))
    counted.connection.ping()  # the connection's own hand-shake is not the wait's
    sends.clear()
    again = counted.wait_many(job_ids, timeout=10)
    assert len(sends) == 1, f"{len(job_ids)} finished jobs read in {len(sends)} round trips"
    assert [result.job_id for result in again] == job_ids


def test_embed_many_gives_an_array_per_batch(service, encoder):
    arrays = service.client.embed_many(BATCHES[:5], timeout=60)
    for batch, vectors in zip(BATCHES[:5], arrays):
        np.testing.assert_allclose(vectors, encoder.encode(batch).vectors, atol=1e-5)


def test_wait_on_a_job_that_is_gone_raises_job_not_found_at_once(service):
    client = service.client
    job_id = client.submit(["expires"])
    client.wait(job_id, timeout=30)
    client.connection.delete(f"rq:job:{job_id}", result_stream_key(job_id))  # gone long before RESULT_TTL
    for missing, error, says in (
        (job_id, JobLost, r"was enqueued \d+ s ago and its records are gone from Redis"),
        ("never-enqueued", JobNotFound, r"no job never-enqueued in Redis \(never enqueued, or expired"),
    ):
        started = time.monotonic()
        with pytest.raises(error, match=says) as raised:
            client.wait(missing, timeout=30)
        assert time.monotonic() - started < 2.0, "JobNotFound must not wait for the timeout"
        assert isinstance(raised.value, JobNotFound)


def test_wait_many_names_the_job_that_failed(service):
    good = service.client.submit(["fine"])
    bad = push_raw(service, job_tuple(EMBED_TASK, {"v": 1, "texts": [3]}))
    with pytest.raises(JobFailed, match=rf"job {bad} failed: .*texts\[0\] must be a str"):
        service.client.wait_many([good, bad], timeout=30)


def test_embed_works_after_redis_forgets_its_scripts(service, encoder):
    service.client.connection.script_flush()  # as a Redis restart does
    vectors = service.client.embed(["scripts are loaded again"], timeout=30)
    np.testing.assert_allclose(vectors, encoder.encode(["scripts are loaded again"]).vectors, atol=1e-5)
