"""What production does to a worker fleet, each against real Redis and real worker processes:
SIGKILL mid-job and mid-pass, a poison job, Redis going away, SIGTERM, a job past its timeout."""

import os
import random
import signal
import subprocess
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
from redis import Redis
from rq.job import Job
from rq.registry import FailedJobRegistry

from bench.redis_proxy import DelayProxy
from embedq import EmbedClient, JobFailed, JobTimeout, QueueUnavailable
from embedq.broker.jobs import MsgpackSerializer
from embedq.broker.rq_private.records import result_stream_key
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService
from embedq.worker.supervisor.host_lock import still_running
from embedq.worker.supervisor.spawn import CONFIG_ERROR_EXIT, embedq_command, settings_env
from tests.conftest import chaos, counter, lanes, make_settings, wait_until

LONG = "Embeddings turn text into vectors so that similar meanings land close together. " * 20  # > 256 tokens


def chaos_batches(count: int, seed: int = 7) -> list[list[str]]:
    """`count` jobs of 1 to 16 texts, a tenth of them over the model's length."""
    rng = random.Random(seed)
    return [
        [
            f"job {i} text {j}: " + ("word " * rng.randint(1, 40) if rng.random() < 0.9 else LONG)
            for j in range(rng.randint(1, 16))
        ]
        for i in range(count)
    ]


def long_texts(count: int) -> list[str]:
    """Texts over the model's length, each new: the cache and a pass's de-duplication would skip repeats."""
    tag = uuid.uuid4().hex[:8]
    return [f"{tag} text {n}: {LONG}" for n in range(count)]


def worker_pid_of(connection: Redis, job_id: str) -> int | None:
    """The pid of the worker running the job now (worker names are host.pid)."""
    job = Job.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
    if job.get_status() != "started" or not job.worker_name:
        return None
    return int(job.worker_name.rsplit(".", 1)[1])


def wait_until_started(connection: Redis, job_id: str, timeout: float = 60.0) -> int:
    wait_until(lambda: worker_pid_of(connection, job_id) is not None, timeout, f"job {job_id} starting")
    pid = worker_pid_of(connection, job_id)
    assert pid is not None, f"job {job_id} started, then left its worker before we saw which"
    return pid


def running_long_job(service: LocalService, count: int) -> tuple[list[str], str, int]:
    """Texts, id and worker pid of a job of `count` long texts, once a worker has started it."""
    texts = long_texts(count)
    job_id = service.client.submit(texts)
    return texts, job_id, wait_until_started(service.client.connection, job_id)


def supervisor_facts(service: LocalService) -> dict:
    supervisors = service.client.stats()["supervisors"]
    assert len(supervisors) == 1, supervisors
    return supervisors[0]


@pytest.fixture
def fresh_service(redis_url, model_dir, tmp_path):
    """A service of its own per test: these tests kill and stop its processes."""
    settings = make_settings(redis_url, model_dir, retries=2, job_timeout=60)
    with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
        yield service


@pytest.fixture(params=[0.0, 1.0], ids=["redis-local", "redis-1ms-away"])
def service_at_rtt(request, redis_url, model_dir, tmp_path):
    """A service of its own whose every process reaches Redis through a proxy adding `param` ms a round trip."""
    proxy = None
    if request.param:
        url = urlsplit(redis_url)
        proxy = DelayProxy(url.port or 6379, request.param / 2000).start()
        redis_url = urlunsplit(url._replace(netloc=f"{url.hostname}:{proxy.port}"))
    settings = make_settings(redis_url, model_dir, retries=2, job_timeout=60)
    try:
        with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
            yield service
    finally:
        if proxy is not None:
            proxy.stop()


def test_a_job_whose_worker_is_killed_is_rerun_within_seconds(fresh_service, encoder):
    client, connection = fresh_service.client, fresh_service.client.connection
    texts, job_id, victim = running_long_job(fresh_service, 48)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    handed_back_s = wait_until(
        lambda: worker_pid_of(connection, job_id) != victim,
        60,
        f"the supervisor handing back job {job_id} of killed worker {victim}",
        interval=0.005,
    )
    result = client.wait(job_id, timeout=60)
    recovery_s = time.monotonic() - killed_at
    print(
        f"killed worker {victim} mid-job: job handed back after {handed_back_s:.2f} s, result after {recovery_s:.1f} s"
    )
    assert handed_back_s < 5
    assert recovery_s < 30
    assert result.worker != f"{os.uname().nodename}.{victim}"
    np.testing.assert_allclose(result.embeddings, encoder.encode(texts).vectors, atol=1e-5)
    assert Job.fetch(job_id, connection=connection, serializer=MsgpackSerializer).meta["abandoned"] == 1


def test_chaos_300_jobs_5_kills_nothing_lost_nothing_doubled(service_at_rtt, encoder):
    chaos(service_at_rtt, encoder, chaos_batches(300))


def test_a_poison_job_fails_after_its_retries_and_the_rest_finish(fresh_service):
    client, connection = fresh_service.client, fresh_service.client.connection
    poison = client.submit(long_texts(64))
    others = client.submit_many([[f"innocent {i}"] for i in range(20)])
    victims = []
    for _ in range(3):  # RETRIES=2: three attempts, each killing its worker
        pid = wait_until_started(connection, poison)
        os.kill(pid, signal.SIGKILL)
        victims.append(pid)
        wait_until(
            lambda pid=pid: worker_pid_of(connection, poison) != pid,
            60,
            f"the supervisor handing back the poison job from killed worker {pid}",
        )
    with pytest.raises(JobFailed) as failure:
        client.wait(poison, timeout=60)
    assert "AbandonedJobError: job abandoned 3 times: its worker died each time" in failure.value.reason
    assert "no retries left" in failure.value.reason
    assert poison in FailedJobRegistry(queue=lanes(client)["interactive"]).get_job_ids()
    assert all(client.wait(job_id, timeout=60).embeddings.shape == (1, 384) for job_id in others)
    assert len(fresh_service.wait_for_workers(2)) == 2
    assert int(supervisor_facts(fresh_service)["restarts"]) == 3


def test_redis_going_away_and_coming_back(model_dir, tmp_path, encoder):
    server = RedisServer(None, "--appendonly", "yes", "--appendfsync", "always").start()
    settings = make_settings(server.url, model_dir, retries=2, job_timeout=60)
    try:
        with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
            client = service.client
            batches = [[f"batch {i} line {j} " + "word " * (i % 30) for j in range(8)] for i in range(60)]
            job_ids = client.submit_many(batches)
            client.wait(job_ids[0], timeout=60)
            server.stop()
            with pytest.raises(QueueUnavailable, match="did not answer"):
                client.submit(["while Redis is down"])
            started = time.monotonic()
            with pytest.raises(JobTimeout, match="did not finish within 1 s"):
                client.wait(job_ids[-1], timeout=1.0)
            assert time.monotonic() - started < 3.0
            time.sleep(3)
            server.start()
            results = [client.wait(job_id, timeout=120) for job_id in job_ids]
            for batch, result in zip(batches, results):
                np.testing.assert_allclose(result.embeddings, encoder.encode(batch).vectors, atol=1e-5)
            assert len(service.wait_for_workers(2)) == 2
            assert int(supervisor_facts(service)["restarts"]) == 0, "workers must ride out the outage"
            log = service.output()
            assert "Redis" in log and ("could not connect" in log or "unreachable" in log or "lost Redis" in log)
            assert service.stop() == 0
    finally:
        server.cleanup()


def test_sigterm_to_a_worker_mid_job_finishes_the_job_then_exits_0(fresh_service, encoder):
    texts, job_id, pid = running_long_job(fresh_service, 32)
    os.kill(pid, signal.SIGTERM)
    result = fresh_service.client.wait(job_id, timeout=60)
    assert result.worker.endswith(f".{pid}")
    np.testing.assert_allclose(result.embeddings, encoder.encode(texts).vectors, atol=1e-5)
    fresh_service.wait_for_workers(2, exclude_pids=frozenset({str(pid)}))
    assert f"(pid {pid}) stopped cleanly (exit code 0)" in fresh_service.output()


def test_sigterm_to_the_supervisor_lets_every_job_finish_then_exits_0(fresh_service):
    client, connection = fresh_service.client, fresh_service.client.connection
    job_ids = client.submit_many([long_texts(24), long_texts(24)])
    for job_id in job_ids:
        wait_until_started(connection, job_id)
    assert fresh_service.stop() == 0
    with Redis.from_url(fresh_service.settings.redis_url) as probe:
        assert all(probe.exists(result_stream_key(job_id)) for job_id in job_ids)


def test_a_job_past_job_timeout_is_stopped_and_the_worker_lives_on(fresh_service):
    impatient = EmbedClient(settings=fresh_service.settings.model_copy(update={"job_timeout": 1}))
    job_id = impatient.submit(long_texts(256))
    with pytest.raises(JobFailed, match="job ran past JOB_TIMEOUT=1 s and was stopped"):
        impatient.wait(job_id, timeout=60)
    assert Job.fetch(job_id, connection=impatient.connection, serializer=MsgpackSerializer).retries_left == 2, (
        "a timed-out job would time out again: no retry is used"
    )
    assert fresh_service.client.embed(["the worker lives on"], timeout=30).shape == (1, 384)
    assert int(supervisor_facts(fresh_service)["restarts"]) == 0


def test_a_pass_killed_between_starting_its_jobs_and_recording_them_reruns_each_once(fresh_service, encoder):
    """The pass's jobs are all started in one script and recorded in another; SIGKILL in between."""
    client, connection = fresh_service.client, fresh_service.client.connection
    fresh_service.wait_for_workers(2)
    batches = [[f"pass job {i}: {text}" for text in long_texts(12)] for i in range(6)]
    jobs_before = counter(client, "jobs")
    job_ids = client.submit_many(batches)
    victim = wait_until_started(connection, job_ids[0])
    held = [job_id for job_id in job_ids if worker_pid_of(connection, job_id) == victim]
    os.kill(victim, signal.SIGKILL)
    results = client.wait_many(job_ids, timeout=120)
    for batch, result in zip(batches, results):
        np.testing.assert_allclose(result.embeddings, encoder.encode(batch).vectors, atol=1e-5)
    assert counter(client, "jobs") - jobs_before == len(job_ids), "each result counted once"
    assert all(connection.xlen(result_stream_key(job_id)) == 1 for job_id in job_ids), "each result written once"
    rerun = [
        job_id
        for job_id in job_ids
        if Job.fetch(job_id, connection=connection, serializer=MsgpackSerializer).meta.get("abandoned") == 1
    ]
    assert job_ids[0] in rerun and set(rerun) <= set(held)
    assert all(not result.worker.endswith(f".{victim}") for result in results if result.job_id in rerun)


def test_a_killed_supervisors_workers_finish_their_pass_and_the_next_one_waits_for_them(fresh_service, tmp_path):
    client, connection = fresh_service.client, fresh_service.client.connection
    job_ids = client.submit_many([long_texts(256), long_texts(256)])
    orphans = sorted({wait_until_started(connection, job_id) for job_id in job_ids})
    assert fresh_service.supervisor is not None
    fresh_service.supervisor.kill()  # SIGKILL: no chance to stop its workers
    fresh_service.supervisor.wait()
    log_path = tmp_path / "second.log"
    with log_path.open("wb") as log:
        second = subprocess.Popen(
            embedq_command("supervise", "--workers", "2"),
            env=settings_env(fresh_service.settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            results = client.wait_many(job_ids, timeout=120)  # the orphans finish their passes
            assert sorted(int(result.worker.rsplit(".", 1)[1]) for result in results) == orphans
            wait_until(
                lambda: not any(still_running(pid, "") for pid in orphans), 30, "the orphans to stop after their pass"
            )
            wait_until(lambda: len(fresh_service.live_workers()) == 2, 120, "the second supervisor's workers")
            said = log_path.read_text()
            assert said.index("2 workers of a previous supervisor still run") < said.index("starting 2 workers")
            assert {int(w["pid"]) for w in fresh_service.live_workers()}.isdisjoint(orphans)
            third = subprocess.run(
                embedq_command("supervise", "--workers", "2"),
                env=settings_env(fresh_service.settings),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert third.returncode == CONFIG_ERROR_EXIT and "SupervisorRunning" in third.stderr
            assert client.embed(["served by the second supervisor"], timeout=60).shape == (1, 384)
        finally:
            second.terminate()
            assert second.wait(timeout=120) == 0


def test_a_hung_worker_is_killed_and_its_jobs_finish_elsewhere_within_60_s(redis_url, model_dir, tmp_path):
    settings = make_settings(redis_url, model_dir, retries=2, job_timeout=60, heartbeat_timeout=3)
    with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
        client, connection = service.client, service.client.connection
        job_ids = client.submit_many([long_texts(48) for _ in range(6)])
        pid = wait_until_started(connection, job_ids[0])
        os.kill(pid, signal.SIGSTOP)  # it holds its pass and never says so
        stopped = time.monotonic()
        results = client.wait_many(job_ids, timeout=60)
        assert time.monotonic() - stopped < 60
        assert not any(result.worker.endswith(f".{pid}") for result in results)
        assert f"(pid {pid}) is hung: no heartbeat for" in service.output()
        assert not still_running(pid, "")
