"""A queue's shards (broker/shards.py): each shard's tag hashes to the middle of its share of the Cluster's
slots, so primaries that split the slots evenly split the shards evenly (checked on a real Cluster too);
one untagged shard off a Cluster is the queue as it always was; the settings refuse a Cluster by name."""

from __future__ import annotations

from collections import Counter

import pytest
from redis import Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from embedq.broker.shards import hash_tag, middle_slot, shard_queues
from embedq.config import Settings
from embedq.errors import InvalidSettings
from embedq.local.redis_cluster import RedisCluster


@pytest.mark.unit
@pytest.mark.parametrize("shards", [1, 2, 3, 5, 6, 12, 64, 256])
def test_each_shard_hashes_to_the_middle_of_its_share_of_the_slots(shards):
    names = shard_queues("embedq", shards, cluster=True)
    assert len(set(names)) == shards
    share = REDIS_CLUSTER_HASH_SLOTS / shards
    for shard, name in enumerate(names):
        slot = key_slot(f"rq:queue:{name}".encode())  # any key with the name has the name's tag's slot
        assert slot == key_slot(f"embedq:{name}:doorbell".encode()) == middle_slot(shard, shards)
        assert shard * share <= slot < (shard + 1) * share
        assert name == f"embedq{hash_tag(name)}"


@pytest.mark.unit
@pytest.mark.parametrize(("primaries", "shards"), [(3, 3), (3, 6), (3, 12), (4, 8), (5, 5)])
def test_primaries_splitting_the_slots_evenly_get_the_shards_evenly(primaries, shards):
    # redis-cli --cluster create's split: primary p holds slots [p * 16384 / n, (p + 1) * 16384 / n)
    owner = [min(slot * primaries // REDIS_CLUSTER_HASH_SLOTS, primaries - 1) for slot in range(16384)]
    held = [0] * primaries
    for name in shard_queues("q", shards, cluster=True):
        held[owner[key_slot(name.encode())]] += 1
    assert held == [shards // primaries] * primaries


@pytest.mark.unit
def test_one_shard_off_a_cluster_keeps_the_queues_names_and_a_cluster_tags_even_one():
    assert shard_queues("embedq", 1) == ["embedq"] and hash_tag("embedq") == ""
    (only,) = shard_queues("embedq", 1, cluster=True)
    assert hash_tag(only) and key_slot(only.encode()) == REDIS_CLUSTER_HASH_SLOTS // 2


@pytest.mark.unit
def test_a_name_with_an_unclosed_brace_has_no_tag():
    assert hash_tag("job{1") == "" and hash_tag("a{b}c{d}") == "{b}"


@pytest.mark.unit
def test_a_cluster_behind_sentinel_or_on_a_unix_socket_is_refused_by_name():
    with pytest.raises(InvalidSettings, match="EMBEDQ_REDIS_CLUSTER: .*not both"):
        Settings.load(redis_cluster=True, redis_sentinels="127.0.0.1:26379")
    with pytest.raises(InvalidSettings, match="EMBEDQ_REDIS_CLUSTER: .*over TCP"):
        Settings.load(redis_cluster=True, redis_url="unix:///tmp/redis.sock")
    assert Settings.load(redis_cluster=True).redis_cluster
    with pytest.raises(InvalidSettings, match="EMBEDQ_QUEUE_SHARDS"):
        Settings.load(queue_shards=0)
    assert Settings.load(queue_shards=6).queue_shards == 6


@pytest.mark.parametrize("shards", [3, 6])
def test_a_real_clusters_primaries_each_own_an_equal_part_of_the_shards(shards):
    """Against a real 3-primary Cluster (redis-cli --cluster create's slot split): each primary holds the
    same number of the queue's shards, as CLUSTER KEYSLOT and the primaries' own slot ranges say."""
    cluster = RedisCluster(primaries=3, replicas=0).start()
    try:
        node = Redis(port=cluster.ports[0])
        ranges = [
            (int(start), int(end), int(entry[b"nodes"][0][b"port"]))
            for entry in node.execute_command("CLUSTER", "SHARDS")
            for start, end in zip(entry[b"slots"][::2], entry[b"slots"][1::2])
        ]
        held: Counter[int] = Counter()
        for name in shard_queues("embedq", shards, cluster=True):
            slot = int(node.execute_command("CLUSTER", "KEYSLOT", f"rq:queue:{name}"))
            (port,) = [port for start, end, port in ranges if start <= slot <= end]
            held[port] += 1
        assert sorted(held) == cluster.primary_ports() and set(held.values()) == {shards // 3}
    finally:
        cluster.cleanup()
