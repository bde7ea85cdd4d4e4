"""embedq's direct sends on a real Redis Cluster (broker/cluster.py): each goes whole to the primary of its
one hash slot, and follows the slot when it moves (MOVED), while it moves (ASK), and refuses a send that
spans slots before sending it; a producer's submits to a sharded queue go where their shard lives."""

from __future__ import annotations

import asyncio

import pytest
from redis import Redis
from redis.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot

from embedq import EmbedClient
from embedq.broker.cluster import first_key, stack_slot
from embedq.broker.direct import execute, stack_of
from embedq.broker.shards import hash_tag
from embedq.config import Settings
from embedq.local.redis_cluster import RedisCluster


@pytest.fixture(scope="module")
def cluster():
    running = RedisCluster(3, 0).start()
    yield running
    running.cleanup()


@pytest.fixture
def client(cluster):
    connection = ClusterClient.from_url(cluster.url)
    yield connection
    connection.close()


@pytest.mark.unit
def test_a_commands_first_key_is_where_redis_reads_its_slot():
    assert first_key(("EVALSHA", "abc", 2, "k1", "k2", "arg")) == "k1"
    assert first_key(("EVALSHA", "abc", 0, "arg")) is None
    assert first_key(("XREAD", "BLOCK", 10, "COUNT", 1, "STREAMS", "s1", "s2", "0", "0")) == "s1"
    assert first_key(("XREAD", "COUNT", 1, b"STREAMS", "s1", "0")) == "s1"  # as redis-py writes it
    assert first_key(("BLPOP", "bell", "doorbell", 1)) == "bell"
    assert first_key(("HGET", "rq:job:x", "status")) == "rq:job:x"
    assert first_key(("SCRIPT LOAD", "return 1")) is None
    one_slot = [(("HGET", "a{t}", "f"), {}), (("EVALSHA", "s", 1, "b{t}"), {}), (("PING",), {})]
    assert stack_slot(one_slot) == key_slot(b"t")
    with pytest.raises(ValueError, match="2 hash slots"):
        stack_slot([(("GET", "a{t}"), {}), (("GET", "a{u}"), {})])


def node_id(port: int) -> str:
    with Redis(port=port) as node:
        return str(node.execute_command("CLUSTER", "MYID").decode())


def test_a_send_reaches_its_slots_primary_and_follows_the_slot_while_and_after_it_moves(cluster, client):
    key, other = "rq:job:{mv}a", "rq:job:{mv}b"
    stack = stack_of(client, [("hset", (key, "status", "queued"), {}), ("hget", (key, "status"), {})])
    assert execute(client, stack) == [1, b"queued"]
    source = cluster.primary_of(key)
    target = next(port for port in cluster.primary_ports() if port != source)
    slot = key_slot(key.encode())
    with Redis(port=source) as src, Redis(port=target) as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(target))
        src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", key)
        # mid-migration: the key is on the target already, the slot still the source's: ASK is followed
        assert execute(client, stack_of(client, [("hget", (key, "status"), {})])) == [b"queued"]
        assert execute(client, stack_of(client, [("hset", (other, "status", "new"), {})])) == [1]
        assert dst.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 2, "a new key goes to the target (ASK)"
        for port in cluster.primary_ports():
            with Redis(port=port) as node:
                node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", node_id(target))
    # done: the client's map still names the source, which answers MOVED: followed
    assert execute(client, stack_of(client, [("hget", (other, "status"), {})])) == [b"new"]
    assert cluster.primary_of(key) == target


def test_a_send_over_two_slots_is_refused_before_it_is_sent(client):
    with pytest.raises(ValueError, match="hash slots"):
        execute(client, stack_of(client, [("set", ("a{x}", 1), {}), ("set", ("a{y}", 1), {})]))
    assert client.exists("a{x}") == 0


def test_a_producers_submits_reach_the_nodes_of_their_shards(cluster, client):
    settings = Settings.load(redis_url=cluster.url, redis_cluster=True, queue="routed", queue_shards=3, cache=False)
    producer = EmbedClient(settings=settings, connection=client)
    ids = [producer.submit([f"text {n}"]) for n in range(60)]
    assert len({hash_tag(job_id) for job_id in ids}) == 3, "calls on every shard"
    assert {producer.status(job_id) for job_id in ids} == {"queued"}
    for job_id in ids:
        with Redis(port=cluster.primary_of(f"rq:job:{job_id}")) as node:
            assert node.hget(f"rq:job:{job_id}", "status") == b"queued", "written on its shard's primary"


def test_an_asyncio_send_reaches_its_slots_primary(cluster):
    from redis.asyncio.cluster import RedisCluster as AsyncClusterClient

    from embedq.broker.cluster import _ASYNC_NODES
    from embedq.broker.direct import aclose, execute_async

    async def run() -> list[object]:
        connection = AsyncClusterClient.from_url(cluster.url)
        try:
            keys = [f"embedq:async{{{tag}}}" for tag in ("a", "b", "c", "d")]
            replies = []
            for key in keys:
                replies += await execute_async(
                    connection, stack_of(connection, [("set", (key, "v"), {}), ("get", (key,), {})])
                )
            return replies
        finally:
            assert len(_ASYNC_NODES[connection].clients) == 3, "one client per primary"
            await aclose(connection)
            assert connection not in _ASYNC_NODES, "closed with the Cluster client"

    assert asyncio.run(run()) == [True, b"v"] * 4
    for tag in ("a", "b", "c", "d"):
        with Redis(port=cluster.primary_of(f"embedq:async{{{tag}}}")) as node:
            assert node.get(f"embedq:async{{{tag}}}") == b"v"


def test_a_workers_claim_on_a_cluster_keeps_its_keys_in_one_slot_and_finds_the_shards(client):
    from embedq.broker.shards import shard_queues
    from embedq.producer.stats import queue_shards
    from embedq.worker.model_claim import ModelConflict, claim_queue

    shards = shard_queues("claimed", 3, cluster=True)
    claim_queue(client, "claimed", "m", 384, ttl=30, fingerprint="f" * 16, shards=shards, cluster=True)
    assert queue_shards(client, "claimed", cluster=True) == shards
    assert all(client.hget(f"embedq:{shard}:model", "dim") == b"384" for shard in shards)
    assert b"claimed" in client.smembers("embedq:queues")
    with pytest.raises(ModelConflict):
        claim_queue(client, "claimed", "other", 256, ttl=30, shards=shards, cluster=True)
