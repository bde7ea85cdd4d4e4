"""embedq on a real Redis Cluster (3 primaries, REDIS_CLUSTER=true, 3 shards), real workers and the real
model: calls spread over every primary and every job finishes with the vectors a standalone Redis gives;
one wait reads jobs of every shard; stats add the shards up; the asyncio client and the cache work; a
worker SIGKILLed mid-pass has its jobs handed back; the gateway serves /v1/embeddings, /metrics and a Batch
API run (and a cancel) with its records in one slot; and no command anywhere is refused for CROSSSLOT."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedq import AsyncEmbedClient, EmbedClient, JobNotFound, QueueFull
from embedq.broker.cache import CACHE_WORKER
from embedq.broker.keys import BatchKeys
from embedq.broker.shards import hash_tag, shard_queues
from embedq.local.redis_cluster import RedisCluster
from embedq.local.service import LocalService
from tests.conftest import kill_a_worker_in_a_pass, make_settings

SHARDS = 3


@pytest.fixture(scope="module")
def cluster():
    running = RedisCluster(3, 0).start()
    yield running
    running.cleanup()


@pytest.fixture(scope="module")
def service(cluster, model_dir, tmp_path_factory):
    settings = make_settings(cluster.url, model_dir, redis_cluster=True, queue_shards=SHARDS)
    with LocalService(settings, workers=2, log_path=tmp_path_factory.mktemp("cluster") / "log") as running:
        yield running
        assert running.stop() == 0, running.output()
        assert "CROSSSLOT" not in running.output() and "Traceback" not in running.output(), running.output()[-3000:]


def batches(count: int, what: str) -> list[list[str]]:
    return [[f"{what} number {n}, {uuid.uuid4().hex}", f"and its second line {n}"] for n in range(count)]


def test_calls_spread_over_every_primary_and_finish_with_their_vectors(cluster, service, encoder):
    client = service.client
    sent = batches(45, "a sentence on a cluster")
    ids = [client.submit(batch) for batch in sent]
    primaries = Counter(cluster.primary_of(f"rq:job:{job_id}") for job_id in ids)
    assert set(primaries) == set(cluster.primary_ports()), f"every primary holds jobs: {primaries}"
    results = client.wait_many(ids, timeout=120)  # jobs of three shards on three nodes in one wait
    assert [result.job_id for result in results] == ids
    expected = encoder.encode(sent[7]).vectors
    assert np.allclose(results[7].embeddings, expected, atol=1e-5)
    vectors = client.embed(["the same text on a cluster"])
    assert np.allclose(vectors, encoder.encode(["the same text on a cluster"]).vectors, atol=1e-5)
    stats = client.stats()
    assert set(stats["shards"]) == set(shard_queues(client.settings.queue, SHARDS, cluster=True))
    assert stats["counters"]["jobs"] >= 46 and stats["queued"] == 0 and len(stats["workers"]) == 2


def test_the_asyncio_client_and_the_cache_work_on_the_cluster(service):
    settings = service.client.settings

    async def run() -> tuple[np.ndarray, int, str]:
        client = AsyncEmbedClient(settings=settings)
        try:
            texts = [f"an async text {uuid.uuid4().hex}"]
            first = await client.embed(texts)
            ids = [await client.submit(batch) for batch in batches(9, "async")]
            waited = await client.wait_many(ids, timeout=60)
            again = await client.wait(await client.submit(texts))
            assert again.embeddings.tobytes() == first.tobytes()
            return first, len(waited), again.worker
        finally:
            await client.aclose()

    first, waited, worker = asyncio.run(run())
    assert first.shape == (1, 384) and waited == 9
    assert worker == CACHE_WORKER, "answered from the shard's cache"


def test_a_worker_killed_mid_pass_on_the_cluster_has_its_jobs_handed_back(service):
    client = service.client
    shards = shard_queues(client.settings.queue, SHARDS, cluster=True)
    long = [f"a long text to be killed on a cluster {uuid.uuid4().hex}: " + "word " * 200 for _ in range(64)]
    ids = [client.submit([f"{n} {long[0]}", *long[1:]], priority="bulk") for n in range(8)]
    kill_a_worker_in_a_pass(service, client.connection, shards)
    started = time.monotonic()
    results = client.wait_many(ids, timeout=180)
    assert all(result.embeddings.shape == (64, 384) for result in results)
    assert time.monotonic() - started < 90
    assert len({hash_tag(job_id) for job_id in ids}) >= 2


def test_the_gateway_serves_embeddings_metrics_and_the_batch_api_on_the_cluster(cluster, service, encoder, tmp_path):
    from tests.conftest import KEY, MODEL, start_gateway
    from tests.test_batches import outputs, request_line, stop, submit, vectors_of, wait_for

    gateway, url = start_gateway(service.settings, EMBEDQ_FILES_DIR=str(tmp_path))
    try:
        api = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)
        reply = api.embeddings.create(model=MODEL, input=[f"over http on a cluster {uuid.uuid4().hex}", "two"])
        assert [len(item.embedding) for item in reply.data] == [384, 384]
        texts = [f"line {n} of a batch on a cluster {uuid.uuid4().hex}" for n in range(300)]
        batch_id = submit(
            api, [request_line(f"req-{n}", {"model": MODEL, "input": text}) for n, text in enumerate(texts)]
        )
        batch = wait_for(api, batch_id, timeout=120)
        assert batch.status == "completed" and batch.request_counts.completed == 300, batch
        done = {line["custom_id"]: line for line in outputs(api, batch.output_file_id)}
        assert len(done) == 300 and np.allclose(
            vectors_of(done["req-42"]), encoder.encode([texts[42]]).vectors, atol=1e-5
        )
        records = BatchKeys.of(cluster=True)
        assert cluster.primary_of(records.batch(batch_id)) == cluster.primary_of(records.active), "one slot"
        api.files.delete(batch.input_file_id)  # the delete script reads the active set beside the record
        with pytest.raises(openai.NotFoundError):
            api.files.retrieve(batch.input_file_id)

        many = [
            request_line(f"big-{n}", {"model": MODEL, "input": [f"{n} {uuid.uuid4().hex}"] * 4}) for n in range(3000)
        ]
        cancelled_id = submit(api, many)
        wait_for(api, cancelled_id, timeout=120, until=("in_progress",))
        api.batches.cancel(cancelled_id)  # its queued jobs cancelled through rq's own cancel, shard by shard
        cancelled = wait_for(api, cancelled_id, timeout=60)
        assert cancelled.status == "cancelled" and cancelled.request_counts.completed < 3000
        assert len(outputs(api, cancelled.output_file_id)) == cancelled.request_counts.completed

        metrics = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text)
        queue = service.settings.queue
        samples = [sample for family in metrics for sample in family.samples]
        jobs = sum(s.value for s in samples if s.name == "embedq_jobs_total" and s.labels["queue"] == queue)
        assert jobs == service.client.stats()["counters"]["jobs"] > 30, "/metrics adds the shards on every primary up"
        lines = {s.labels["outcome"]: s.value for s in samples if s.name == "embedq_batch_lines_total"}
        assert lines["completed"] == 300 + cancelled.request_counts.completed, lines
    finally:
        output = stop(gateway)
    assert "Traceback" not in output and "driving failed" not in output, output[-3000:]  # the cancel included


def test_lanes_queue_full_and_job_not_found_on_the_cluster(service, encoder):
    client = service.client
    bulk = client.submit_many([[f"bulk on a cluster {n} {uuid.uuid4().hex}"] for n in range(6)], priority="bulk")
    first = client.submit([f"interactive on a cluster {uuid.uuid4().hex}"])
    results = client.wait_many([first, *bulk], timeout=60)
    assert [result.job_id for result in results] == [first, *bulk]
    with pytest.raises(JobNotFound):
        client.wait("no-such-job", timeout=10)  # no tag: no shard's job, and no send over two slots
    with pytest.raises(JobNotFound):
        client.result("no-such-job")
    with pytest.raises(JobNotFound):
        client.wait(f"no-such-job{hash_tag(bulk[0])}", timeout=10)
    assert client.status(f"no-such-job{hash_tag(bulk[0])}") == "unknown"

    limited = service.settings.model_copy(update={"queue": f"full-{uuid.uuid4().hex[:8]}", "max_queue_length": 2})
    with EmbedClient(settings=limited) as full:  # no worker serves this queue: its jobs stay
        full.submit_many([["the same first text"], ["is on the same shard"]])
        with pytest.raises(QueueFull, match=r"holds 2 jobs; 1 more would pass MAX_QUEUE_LENGTH=2"):
            full.submit(["the same first text"])
        landed = 0
        for n in range(20):  # the limit is per shard: the other two shards take two jobs each
            with contextlib.suppress(QueueFull):
                full.submit([f"another first text {n}"])
                landed += 1
        assert landed == 4 and full.stats()["queued"] == 2 * SHARDS, "a queue holds up to shards x MAX_QUEUE_LENGTH"


def test_a_shard_that_is_nobodys_home_is_served_at_once_on_an_idle_cluster(service):
    client = service.client  # 2 workers, 3 shards: one shard has no home worker, whose doorbell threads watch
    by_shard: dict[str, list[float]] = {}
    for n in range(24):
        time.sleep(0.3)  # idle between calls: every worker blocked on its bells
        started = time.monotonic()
        job_id = client.submit([f"an idle call on a cluster {n} {uuid.uuid4().hex}"])
        client.wait(job_id, timeout=30)
        by_shard.setdefault(hash_tag(job_id), []).append(time.monotonic() - started)
    assert len(by_shard) == SHARDS
    slowest = {tag: max(times) for tag, times in by_shard.items()}
    assert max(slowest.values()) < 0.4, f"slowest call per shard (s): {slowest}; a homeless shard waits for a look"


def test_a_busy_cluster_serves_every_shard_without_waiting_for_a_look(service):
    """16 callers keep both workers busy: a ring a watch hears while its worker runs a pass is owed a look
    when that pass ends, and every ring heard at once gets its look (before, all but the first waited for
    the worker's own look a second later: 59 single-text jobs/s on 3 shards instead of ~300)."""
    client = service.client
    texts = [f"a busy cluster's call {n} {uuid.uuid4().hex}" for n in range(320)]

    def call(text: str) -> float:
        started = time.monotonic()
        client.embed([text], timeout=60)
        return time.monotonic() - started

    with ThreadPoolExecutor(16) as pool:
        times = list(pool.map(call, texts))
    waited = sum(took >= 0.9 for took in times)  # a look on its own comes after a second's wait for a ring
    assert waited <= len(times) // 50, f"{waited} of {len(times)} calls took over 0.9 s (slowest {max(times):.2f} s)"
