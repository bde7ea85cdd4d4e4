"""Redis Sentinel failover (issue 13's case 7) with real processes: a primary, a replica and three
sentinels (Debian's redis-server, in sentinel mode as redis-sentinel runs it) on free loopback ports.
The primary is SIGKILLed mid-run; producers, workers, the supervisor and the gateway follow the new
primary by themselves, and every job whose submit returned after the failover finishes."""

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from redis import Redis

from embedq import JobNotFound, JobTimeout, QueueUnavailable
from embedq.local.redis_server import RedisServer, free_port
from embedq.local.service import LocalService
from tests.conftest import embed_over_http, make_settings, start_gateway, wait_until

MASTER = "mymaster"


@pytest.fixture
def sentinel_setup(tmp_path):
    primary = RedisServer().start()
    replica = RedisServer(None, "--replicaof", "127.0.0.1", str(primary.port)).start()
    ports = [free_port() for _ in range(3)]
    sentinels = []
    for port in ports:
        conf = tmp_path / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 10000\n"
        )
        sentinels.append(subprocess.Popen(["redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL))
    probe = Redis(port=ports[0], decode_responses=True)
    # the replica's first sync waits out the primary's repl-diskless-sync-delay (5 s): jobs written before it
    # completes could only be lost in the failover
    link = Redis.from_url(replica.url)
    wait_until(lambda: link.info("replication").get("master_link_status") == "up", 30, "the replica's first sync")
    wait_until(lambda: _answers(probe) and len(probe.sentinel_slaves(MASTER)) == 1, 30, "sentinel sees the replica")
    wait_until(lambda: len(probe.sentinel_sentinels(MASTER)) == 2, 30, "the sentinels see each other")
    try:
        yield primary, replica, [f"127.0.0.1:{port}" for port in ports], probe
    finally:
        for process in sentinels:
            process.terminate()
            process.wait(timeout=10)
        primary.cleanup()
        replica.cleanup()


def _answers(connection: Redis) -> bool:
    try:
        return bool(connection.ping())
    except Exception:
        return False


def primary_port(probe: Redis) -> int:
    return int(probe.sentinel_get_master_addr_by_name(MASTER)[1])


def test_the_fleet_follows_a_failover_and_every_job_submitted_after_it_finishes(sentinel_setup, model_dir, tmp_path):
    primary, replica, sentinels, probe = sentinel_setup
    settings = make_settings(primary.url, model_dir, redis_sentinels=",".join(sentinels), retries=2, job_timeout=60)
    with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
        acknowledged: list[tuple[str, float]] = []
        refused = [0]
        stop = threading.Event()

        def produce() -> None:
            for i in range(100_000):
                if stop.is_set():
                    return
                try:
                    acknowledged.append((service.client.submit([f"failover job {i}"]), time.monotonic()))
                except QueueUnavailable:
                    refused[0] += 1
                time.sleep(0.02)

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            time.sleep(2)
            assert primary.process is not None
            primary.process.kill()  # SIGKILL: asynchronous replication may not have sent its last writes
            killed = time.monotonic()
            wait_until(lambda: primary_port(probe) == replica.port, 60, "the sentinels to promote the replica")
            promoted = time.monotonic()
            time.sleep(3)
        finally:
            stop.set()
            producer.join()
        after = [job_id for job_id, at in acknowledged if at > promoted]
        assert len(after) > 20
        assert len(service.client.wait_many(after, timeout=120)) == len(after)

        def outcome(job_id: str) -> str:
            try:
                service.client.wait(job_id, timeout=30)
            except (JobNotFound, JobTimeout) as error:
                return type(error).__name__
            return "finished"

        before = [job_id for job_id, at in acknowledged if at <= killed]
        with ThreadPoolExecutor(32) as pool:
            outcomes = list(pool.map(outcome, before))
        caught = {name: outcomes.count(name) for name in set(outcomes)}
        print(
            f"\nfailover: promoted {promoted - killed:.1f} s after the kill; {len(before)} jobs acknowledged before "
            f"it: {caught}; {refused[0]} submits refused during it; {len(after)} after it, all finished"
        )
        assert caught.get("finished", 0) >= len(before) * 0.9, caught

        gateway, url = start_gateway(service.settings)  # the gateway finds the new primary through Sentinel too
        try:
            embed_over_http(url, "after the failover", timeout=60)
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
        assert int(service.client.stats()["supervisors"][0]["restarts"]) == 0
        assert service.stop() == 0
