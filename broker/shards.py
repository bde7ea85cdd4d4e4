"""A queue's shards: hash-tagged parts, each with both lanes and every key a script of it touches in one
Redis Cluster hash slot (BullMQ's way: a tag per queue part). Shard `i` of `n` gets the tag whose slot is
the middle of the i-th 1/n of the 16,384 slots, so a Cluster whose primaries split the slots evenly gets
the shards split evenly when the shard count is a multiple of the primaries'. One shard on a standalone
Redis (or behind Sentinel) is the queue as it always was: its name untagged, its keys unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from itertools import chain, product

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from embedq.config.settings import ClientSettings

TAG_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _names(length: int) -> Iterator[str]:
    """Every name of `length` characters of TAG_ALPHABET."""
    return ("".join(letters) for letters in product(TAG_ALPHABET, repeat=length))


@lru_cache(maxsize=1)
def _tag_of_slot() -> dict[int, str]:
    """The shortest tag of up to three characters that hashes to each slot (they reach 16,299 of 16,384)."""
    found: dict[int, str] = {}
    for name in chain(_names(1), _names(2), _names(3)):
        found.setdefault(key_slot(name.encode()), name)
    return found


def _tag_for(slot: int) -> str:
    """The shortest tag hashing to `slot` (four characters for the few that three do not reach)."""
    if (tag := _tag_of_slot().get(slot)) is not None:
        return tag
    return next(name for name in _names(4) if key_slot(name.encode()) == slot)


def middle_slot(shard: int, shards: int) -> int:
    """The slot in the middle of the shard's 1/shards of the slots."""
    return (2 * shard + 1) * REDIS_CLUSTER_HASH_SLOTS // (2 * shards)


def shard_tag(shard: int, shards: int) -> str:
    """The hash tag (without braces) whose slot is middle_slot(shard, shards)."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}")
    return _tag_for(middle_slot(shard, shards))


def tagged(cluster: bool, shards: int) -> bool:
    """Whether the queue's names carry shard tags: always on a Cluster, else when split in several."""
    return cluster or shards > 1


def shard_queues(queue: str, shards: int, cluster: bool = False) -> list[str]:
    """The names of `queue`'s shards, as the lanes' rq queues and embedq's per-queue keys take them:
    `queue{tag}` (Redis hashes only what is between the braces), or `queue` itself when untagged."""
    if not tagged(cluster, shards):
        return [queue]
    return [f"{queue}{{{shard_tag(shard, shards)}}}" for shard in range(shards)]


def records_of(queue: str, cluster: bool) -> str:
    """The name the queue-wide records (its claim, its model's facts with the shard count) are keyed by:
    the queue's own, hash-tagged whole on a Cluster (`{queue}`), so a claim's keys share one slot."""
    return f"{{{queue}}}" if cluster else queue


def shards_of(settings: ClientSettings) -> list[str]:
    """The settings' queue's shards (QUEUE_SHARDS, REDIS_CLUSTER)."""
    return shard_queues(settings.queue, settings.queue_shards, settings.redis_cluster)


def hash_tag(name: str) -> str:
    """The `{tag}` a shard's name carries ('' for an untagged one), to put in its job ids and per-worker keys."""
    start = name.find("{")
    end = name.find("}", start) if start >= 0 else -1
    return name[start : end + 1] if end >= 0 else ""
