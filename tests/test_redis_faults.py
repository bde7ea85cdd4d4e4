"""What a Redis in trouble does to the fleet, each on a private redis-server with real workers under the
supervisor: out of memory mid-run (issue 13's case 1), hanging while the fleet is told to stop (case 9),
and restarted with AOF mid-run (case 3)."""

import signal
import threading
import time

import httpx
import pytest
from redis import Redis

from embedq import RedisOutOfMemory
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService
from embedq.worker.supervisor.host_lock import still_running
from tests.conftest import KEY, MODEL, make_settings, start_gateway, wait_until


@pytest.fixture
def private_redis():
    server = RedisServer().start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.send_signal(signal.SIGCONT)
        server.cleanup()


def test_redis_out_of_memory_refuses_submits_by_name_and_loses_no_job(private_redis, model_dir, tmp_path):
    admin = Redis.from_url(private_redis.url)
    settings = make_settings(private_redis.url, model_dir, retries=2, job_timeout=60)
    with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
        gateway, url = start_gateway(service.settings)
        accepted: list[tuple[str, list[str]]] = []
        refused: list[str] = []
        stop = threading.Event()

        def produce() -> None:
            for i in range(100_000):
                if stop.is_set():
                    return
                texts = [f"submission {i} " + "word " * (i % 40)]
                try:
                    accepted.append((service.client.submit(texts), texts))
                except RedisOutOfMemory as error:
                    refused.append(str(error))
                time.sleep(0.005)

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            wait_until(lambda: len(accepted) > 100, 30, "jobs flowing")
            admin.config_set("maxmemory", admin.info("memory")["used_memory"])
            wait_until(lambda: len(refused) > 50, 30, "submits refused while Redis is full")
            # httpx's default 5 s timed out here 1 run in 4 (on main too, 2026-12-04): the 503 is what is tested;
            # why the gateway is sometimes slow to give it while Redis is full is an open question (closing note)
            answer = httpx.post(
                f"{url}/v1/embeddings",
                json={"model": MODEL, "input": "x"},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=30,
            )
            time.sleep(8)  # the workers meet the full Redis for a while
            admin.config_set("maxmemory", 0)
            time.sleep(2)
        finally:
            stop.set()
            producer.join()
            gateway.terminate()
            gateway.wait(timeout=30)
        assert "Redis is out of memory (used " in refused[0] and "of maxmemory " in refused[0]
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        assert "out of memory" in answer.json()["error"]["message"]
        for job_id, texts in accepted:  # every job whose submit returned finishes, once Redis has room again
            assert service.client.wait(job_id, timeout=120).embeddings.shape == (len(texts), 384)
        supervisor = service.client.stats()["supervisors"][0]
        assert int(supervisor["restarts"]) == 0, "workers ride out a full Redis"
        complaints = [line for line in service.output().splitlines() if "Redis refused" in line]
        assert 0 < len(complaints) <= 30, f"{len(complaints)} lines: one per backoff step, not one per try"
        assert service.stop() == 0


def test_sigterm_stops_the_fleet_within_10_s_while_redis_hangs(private_redis, model_dir, tmp_path):
    settings = make_settings(private_redis.url, model_dir, job_timeout=60)
    service = LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log")
    with service:
        assert service.supervisor is not None
        supervisor = service.supervisor
        workers = [int(worker["pid"]) for worker in service.live_workers()]
        assert len(workers) == 2
        # the facts come before rq's start-up ends (its signal handlers last): a SIGTERM before then is
        # the default one. A worker's first look for work sets its rq state past "started" (a race seen on
        # a busy machine, 2026-12-07)
        names = [worker["name"] for worker in service.live_workers()]
        admin = Redis.from_url(private_redis.url)
        wait_until(
            lambda: all(admin.hget(f"rq:worker:{name}", "state") in (b"idle", b"busy") for name in names),
            30,
            "both workers looking for work",
        )
        private_redis.process.send_signal(signal.SIGSTOP)  # it accepts connections and never answers
        time.sleep(4)
        started = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        took = time.monotonic() - started
        assert took < 10, f"the fleet took {took:.1f} s to stop"
        assert not any(still_running(pid, "") for pid in workers)
        log = service.output()
        assert log.count("stopped cleanly (exit code 0)") == 2, log[-2000:]
        private_redis.process.send_signal(signal.SIGCONT)


def test_a_clean_redis_restart_with_aof_mid_run_loses_none_of_500_queued_jobs(model_dir, tmp_path):
    """The shipped docker-compose's persistence (AOF, fsync every second): SHUTDOWN writes it out whole."""
    server = RedisServer(None, "--appendonly", "yes", "--appendfsync", "everysec").start()
    settings = make_settings(server.url, model_dir, retries=2, job_timeout=60)
    try:
        with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
            batches = [[f"job {i} text {j} " + "word " * (i % 25) for j in range(4)] for i in range(500)]
            job_ids = service.client.submit_many(batches)
            wait_until(lambda: service.client.stats()["counters"]["jobs"] >= 20, 60, "the fleet is working")
            Redis.from_url(server.url).shutdown()  # a clean stop: Redis writes its AOF out and exits
            assert server.process is not None
            server.process.wait(timeout=30)
            server.start()  # the same port and directory: it reloads the AOF
            results = service.client.wait_many(job_ids, timeout=300)
            assert [len(result.embeddings) for result in results] == [4] * 500
            assert int(service.client.stats()["supervisors"][0]["restarts"]) == 0
    finally:
        server.cleanup()
