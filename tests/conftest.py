"""Shared fixtures: a real Redis (the one at EMBEDQ_TEST_REDIS_URL, else a private redis-server),
the real default model, and a real supervisor with real worker processes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis import Redis

from embedq import EmbedClient, EmbedResult
from embedq.broker.connection import redis_answers
from embedq.broker.keys import WORKER_KEY_PATTERN, held_key, metrics_key, serving_key
from embedq.broker.lanes import COUNTERS, LANES, Lane
from embedq.broker.rq_private import Queue
from embedq.broker.rq_private.records import result_stream_key
from embedq.config import DEFAULT_MODEL_DIR, Settings
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService
from embedq.producer.stats import process_facts
from embedq.worker.model.export import prepare_default
from embedq.worker.supervisor.spawn import embedq_command, settings_env

TEST_REDIS_URL = os.environ.get("EMBEDQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# The STS Benchmark test set beside this checkout, as this project's CI has it; EMBEDQ_STSB to point elsewhere.
SHARED_STSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsbenchmark" / "sts-test.csv"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A database of our own (index 15 by default), emptied before and after the session."""
    if redis_answers(TEST_REDIS_URL):
        url, server = TEST_REDIS_URL, None
    else:
        server = RedisServer().start()
        url = server.url
    connection = Redis.from_url(url)
    connection.flushdb()
    yield url
    connection.flushdb()
    if server is not None:
        server.cleanup()


@pytest.fixture
def redis(redis_url: str) -> Redis:
    return Redis.from_url(redis_url)


@pytest.fixture(scope="session")
def stsb() -> Path:
    """The STS Benchmark test file beside this checkout (EMBEDQ_STSB to point elsewhere). CI has it,
    so there its absence fails; a checkout without it skips the quality tests, saying why."""
    path = Path(os.environ.get("EMBEDQ_STSB", SHARED_STSB))
    if not path.is_file():
        message = f"no STS Benchmark test file at {path} (set EMBEDQ_STSB)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return prepare_default(Path(os.environ.get("EMBEDQ_MODEL_DIR", DEFAULT_MODEL_DIR)))


def make_settings(redis_url: str, model_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "redis_url": redis_url,
        "queue": f"test-{uuid.uuid4().hex[:8]}",
        "model_dir": model_dir,
        "workers": 2,
        "job_timeout": 60,
        "retries": 1,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(redis_url: str, model_dir: Path) -> Settings:
    return make_settings(redis_url, model_dir)


@pytest.fixture(scope="session")
def encoder(model_dir: Path):  # type: ignore[no-untyped-def]
    from embedq.worker.model.encoder import Encoder

    return Encoder.from_settings(Settings(model_dir=model_dir, workers=1))


@pytest.fixture(scope="module")
def service(redis_url: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalService]:
    """A real supervisor with 2 real worker processes, its log kept for the assertions."""
    log_path = tmp_path_factory.mktemp("service") / "supervisor.log"
    with LocalService(make_settings(redis_url, model_dir), workers=2, log_path=log_path) as running:
        yield running
        assert running.stop() == 0, running.output()


def lanes(client: EmbedClient) -> dict[Lane, Queue]:
    """The rq queues of the lanes of a client's queue that has one shard."""
    (only,) = client.shards.values()
    return only


def counter(client: EmbedClient, name: str, lanes: tuple[str, ...] = LANES) -> int:
    """One of the client's queue's counters (embedq:{queue}:metrics) over `lanes`, 0 before it is first written."""
    fields = [f"{lane}:{name}" for lane in lanes] if name in COUNTERS else [name]
    values = client.connection.hmget(metrics_key(client.settings.queue), fields)
    return sum(int(float(value or 0)) for value in values)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> float:
    """Poll `condition` until it holds; seconds it took. AssertionError naming `what` at the deadline."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)
    return time.monotonic() - started


def kill_a_worker_in_a_pass(service: LocalService, connection: Redis, shards: list[str]) -> int:
    """SIGKILL the first of `service`'s live workers found holding jobs of one of `shards` (within 60 s): its pid."""
    victim: list[int] = []

    def running() -> bool:
        for worker in service.live_workers():
            if any(connection.scard(held_key(worker["name"], shard)) for shard in shards):
                victim.append(int(worker["pid"]))
                return True
        return False

    wait_until(running, 60, "a worker in a pass")
    os.kill(victim[0], signal.SIGKILL)
    return victim[0]


def chaos(service: LocalService, encoder, batches: list[list[str]], calls: int = 1, seed: int = 7) -> float:  # type: ignore[no-untyped-def]
    """`batches` submitted in `calls` submit_many calls (a call's jobs share one shard) while 5 random workers
    of `service` (2 live) are SIGKILLed; then every job has finished once (one result entry, counted once)
    with the encoder's vectors, none failed, the results keep RESULT_TTL and the supervisor restarted each
    killed worker. Seconds it took."""
    client = service.client
    rng = random.Random(seed)
    before = client.stats()
    started = time.monotonic()
    size = -(-len(batches) // calls)
    job_ids = [job_id for at in range(0, len(batches), size) for job_id in client.submit_many(batches[at : at + size])]
    kills: list[int] = []

    def kill_random_workers() -> None:
        for _ in range(5):
            time.sleep(rng.uniform(0.4, 1.2))
            alive = service.wait_for_workers(2, exclude_pids=frozenset(str(pid) for pid in kills))
            victim = int(rng.choice(alive)["pid"])
            os.kill(victim, signal.SIGKILL)
            kills.append(victim)

    killer = threading.Thread(target=kill_random_workers)
    killer.start()
    results = [client.wait(job_id, timeout=180) for job_id in job_ids]
    killer.join()
    elapsed = time.monotonic() - started
    print(f"chaos: {len(job_ids)} jobs, {sum(map(len, batches))} texts, {len(kills)} SIGKILLs, {elapsed:.1f} s")

    assert len(kills) == 5
    for batch, result in zip(batches, results):
        np.testing.assert_allclose(result.embeddings, encoder.encode(batch).vectors, atol=1e-5)
    assert all(client.status(job_id) == "finished" for job_id in job_ids)
    ttl = service.settings.result_ttl
    assert all(ttl - 300 < client.connection.ttl(result_stream_key(job_id)) <= ttl for job_id in job_ids)
    after = client.stats()
    assert after["failed"] == before["failed"]
    # a pass writes a result (and counts it) once per job, however many times its worker died
    assert after["counters"]["jobs"] - before["counters"]["jobs"] == len(job_ids)
    assert all(client.connection.xlen(result_stream_key(job_id)) == 1 for job_id in job_ids)
    assert len(service.wait_for_workers(2)) == 2
    (supervisor,) = client.stats()["supervisors"]
    assert int(supervisor["restarts"]) == 5
    return elapsed


KEY = "sk-embedq-test"
MODEL = "all-MiniLM-L6-v2"


def served_alone(settings: Settings, texts: list[str]) -> EmbedResult:
    """`texts` embedded on `settings`' queue by one worker of `settings` started for them, which then stops
    and whose claim of the queue is dropped (as after WORKER_TTL), so that another model may claim it."""
    worker = subprocess.Popen(
        embedq_command("worker"), env=settings_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with EmbedClient(settings=settings) as client:
            # once it has claimed the queue its fingerprint keys the look-ups (before, the last model's did)
            wait_until(lambda: process_facts(client.connection, WORKER_KEY_PATTERN, settings.queue), 60, "worker up")
            return client.wait(client.submit(texts), timeout=60)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        Redis.from_url(settings.redis_url).delete(serving_key(settings.queue))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_gateway(settings: Settings, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    """`embedq serve` as a real process on a free port, with key KEY, once /health answers."""
    port = free_port()
    files = tempfile.mkdtemp(prefix="embedq-files-")  # the Batch API's files, unless `env` names a directory
    variables = {
        **settings_env(settings),
        "EMBEDQ_HTTP_PORT": str(port),
        "EMBEDQ_API_KEYS": KEY,
        "EMBEDQ_FILES_DIR": files,
        **env,
    }
    process = subprocess.Popen(embedq_command("serve"), env=variables, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            output = process.stdout.read().decode() if process.stdout else ""
            raise AssertionError(f"embedq serve did not start: {output[-2000:]}")
        time.sleep(0.1)


def embed_over_http(url: str, text: str = "a normal request", timeout: float = 30) -> float:
    """One /v1/embeddings request with key KEY on a new connection, which must answer 200; its seconds."""
    started = time.monotonic()
    answer = httpx.post(
        f"{url}/v1/embeddings",
        json={"model": MODEL, "input": text},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=timeout,
    )
    assert answer.status_code == 200, answer.text
    return time.monotonic() - started


@pytest.fixture(scope="module")
def gateway(service: LocalService) -> Iterator[str]:
    """`embedq serve` in front of the module's service, with an alias and a small body limit."""
    process, url = start_gateway(
        service.settings,
        EMBEDQ_MODEL_ALIASES=f"sentence-transformers/{MODEL}={MODEL}",
        EMBEDQ_HTTP_MAX_BODY_BYTES="200000",
    )
    yield url
    process.terminate()
    output = process.communicate(timeout=30)[0].decode()
    assert KEY not in output  # keys are never logged
