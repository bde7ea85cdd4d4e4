"""What production does to embedq on a real Redis Cluster (3 shards over its primaries), real workers and
the real model: workers SIGKILLed at random (nothing lost, nothing written twice), a primary SIGKILLed
so that its replica takes over, and slots migrated with `redis-cli --cluster reshard` while jobs flow."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from embedq import JobNotFound, JobTimeout, QueueUnavailable
from embedq.broker.shards import shard_queues
from embedq.local.redis_cluster import RedisCluster
from embedq.local.service import LocalService
from tests.conftest import chaos, make_settings, wait_until
from tests.test_faults import chaos_batches

SHARDS = 3


def clustered(model_dir: Path, log: Path, primaries: int, replicas: int) -> Iterator[tuple[RedisCluster, LocalService]]:
    cluster = RedisCluster(primaries, replicas).start()
    try:
        settings = make_settings(cluster.url, model_dir, redis_cluster=True, queue_shards=SHARDS, retries=2)
        with LocalService(settings, workers=2, log_path=log) as service:
            yield cluster, service
            assert "CROSSSLOT" not in service.output(), service.output()[-3000:]
    finally:
        cluster.cleanup()


@pytest.fixture
def three_primaries(model_dir, tmp_path):
    yield from clustered(model_dir, tmp_path / "supervisor.log", 3, 0)


@pytest.fixture
def with_replicas(model_dir, tmp_path):
    yield from clustered(model_dir, tmp_path / "supervisor.log", 3, 1)


class Producer:
    """Single-text submits every 20 ms from a thread, each acknowledged id with the time its submit returned;
    submits refused while Redis is away are counted."""

    def __init__(self, service: LocalService) -> None:
        self.service, self.acknowledged, self.refused = service, list[tuple[str, float]](), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                job_id = self.service.client.submit([f"a job while the cluster changes {uuid.uuid4().hex}"])
                self.acknowledged.append((job_id, time.monotonic()))
            except QueueUnavailable:
                self.refused += 1
            time.sleep(0.02)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def ids(self, keep: Callable[[float], bool] = lambda _: True) -> list[str]:
        return [job_id for job_id, at in self.acknowledged if keep(at)]


def outcome(service: LocalService, job_id: str) -> str:
    try:
        service.client.wait(job_id, timeout=30)
    except (JobNotFound, JobTimeout) as error:
        return type(error).__name__
    return "finished"


def test_chaos_on_the_cluster_nothing_lost_nothing_doubled(three_primaries, encoder):
    _cluster, service = three_primaries
    chaos(service, encoder, chaos_batches(150, seed=11), calls=15)  # 15 calls: every shard gets jobs
    assert service.stop() == 0


def test_a_primary_killed_mid_run_is_replaced_and_every_job_submitted_after_it_finishes(with_replicas):
    cluster, service = with_replicas
    shard = shard_queues(service.settings.queue, SHARDS, cluster=True)[1]
    victim = cluster.primary_of(f"embedq:{shard}:metrics")
    if victim == cluster.nodes[0].port:  # keep the URL's node: the others are found from it at start-up
        shard = shard_queues(service.settings.queue, SHARDS, cluster=True)[2]
        victim = cluster.primary_of(f"embedq:{shard}:metrics")
    with Producer(service) as producer:
        time.sleep(2)
        cluster.kill(victim)  # SIGKILL: asynchronous replication may not have sent its last writes
        killed = time.monotonic()
        wait_until(lambda: victim not in cluster.primary_ports() and len(cluster.primary_ports()) == 3, 60, "failover")
        promoted = time.monotonic()
        time.sleep(3)
    after = producer.ids(lambda at: at > promoted)
    assert len(after) > 20
    assert len(service.client.wait_many(after, timeout=120)) == len(after)
    before = producer.ids(lambda at: at <= killed)
    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(lambda job_id: outcome(service, job_id), before))
    caught = {name: outcomes.count(name) for name in set(outcomes)}
    print(
        f"\ncluster failover: replica promoted {promoted - killed:.1f} s after the kill; {len(before)} jobs "
        f"acknowledged before it: {caught}; {producer.refused} submits refused during it; {len(after)} after it, "
        "all finished"
    )
    assert caught.get("finished", 0) >= len(before) * 0.9, caught
    assert len(service.wait_for_workers(2)) == 2


def test_slots_migrated_while_jobs_flow_lose_nothing(three_primaries):
    cluster, service = three_primaries
    shard = shard_queues(service.settings.queue, SHARDS, cluster=True)[0]
    source = cluster.primary_of(f"embedq:{shard}:metrics")
    target = next(port for port in cluster.primary_ports() if port != source)
    with Producer(service) as producer:
        time.sleep(1)
        # all its slots but its last (a primary left with none becomes a replica): the shard's among them
        cluster.move_slots(source, target, cluster.slot_count(source) - 1)
        assert cluster.primary_of(f"embedq:{shard}:metrics") == target
        time.sleep(1)
        cluster.move_slots(target, source, 2000)  # and some back, the shard's slot with them or not
        time.sleep(1)
    sent = producer.ids()
    assert producer.refused == 0 and len(sent) > 50
    results = service.client.wait_many(sent, timeout=120)
    assert [result.job_id for result in results] == sent
    print(f"\nreshard: {len(sent)} jobs submitted while slots moved twice, all finished")
    assert service.stop() == 0
