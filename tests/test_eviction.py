"""A Redis that evicts (issue 13's case 2), on a private redis-server with allkeys-lru: the worker,
`embedq stats` and the gateway's readiness name the risk (an error under EMBEDQ_REQUIRE_NOEVICTION), and
jobs Redis evicted are reported as lost, not as never enqueued."""

import random
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from redis import Redis

from embedq import EmbedClient, JobLost
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService
from embedq.worker.supervisor.spawn import CONFIG_ERROR_EXIT, embedq_command, settings_env
from tests.conftest import make_settings, start_gateway

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "sigma", "omega", "tau", "iota"]


@pytest.fixture
def evicting_redis():
    server = RedisServer(None, "--maxmemory-policy", "allkeys-lru").start()
    try:
        yield server
    finally:
        server.cleanup()


def run(settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        embedq_command(*args), env={**settings_env(settings), **env}, capture_output=True, text=True, timeout=120
    )


def test_evicted_jobs_are_reported_lost_and_the_policy_is_named(evicting_redis, model_dir, tmp_path):
    settings = make_settings(evicting_redis.url, model_dir, max_chars_per_text=20_000)
    admin = Redis.from_url(evicting_redis.url)
    rng = random.Random(0)
    texts = [[" ".join(rng.choices(WORDS, k=1500))] for _ in range(400)]  # ~10 KB each, hardly compressible
    admin.config_set("maxmemory", 2 * 1024 * 1024)
    with EmbedClient(settings=settings) as client:
        job_ids = [client.submit(batch) for batch in texts]  # before any worker: Redis evicts the oldest
    admin.config_set("maxmemory", 0)
    assert admin.info("stats")["evicted_keys"] > 0

    with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
        assert "maxmemory-policy is allkeys-lru" in service.output()

        def outcome(job_id: str) -> str:
            try:
                service.client.wait(job_id, timeout=120)
            except JobLost as error:  # its records evicted, or (~5 s to tell) its id evicted with its queue's list
                return str(error)
            return "finished"

        with ThreadPoolExecutor(64) as pool:
            outcomes = list(pool.map(outcome, job_ids))
        lost = [text for text in outcomes if text != "finished"]
        assert 0 < len(lost) < len(job_ids)
        assert all("maxmemory-policy other than noeviction" in text for text in lost)
        # which keys LRU sampling evicts varies: a job's hash ("records are gone"), or its lane's list ("in no queue")
        assert all("records are gone from Redis" in text or "is queued but in no queue" in text for text in lost)

        stats = run(service.settings, "stats")
        assert stats.returncode == 0 and "WARNING: Redis' maxmemory-policy is allkeys-lru" in stats.stdout
        strict = run(service.settings, "stats", EMBEDQ_REQUIRE_NOEVICTION="true")
        assert strict.returncode == CONFIG_ERROR_EXIT and "EvictionRisk" in strict.stderr

        for env, status in (({}, 200), ({"EMBEDQ_REQUIRE_NOEVICTION": "true"}, 503)):
            gateway, url = start_gateway(service.settings, **env)
            try:
                ready = httpx.get(f"{url}/ready")
                assert ready.status_code == status
                assert "allkeys-lru" in (ready.json().get("warning") or ready.json()["redis"])
            finally:
                gateway.terminate()
                gateway.wait(timeout=30)

    worker = run(settings, "worker", EMBEDQ_REQUIRE_NOEVICTION="true")
    assert worker.returncode == CONFIG_ERROR_EXIT
    assert "EvictionRisk" in worker.stderr and "noeviction" in worker.stderr
