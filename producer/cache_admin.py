"""`embedq cache clear`: a queue's cached vectors removed, and its accounting with them."""

from __future__ import annotations

from collections.abc import Sequence

from redis import Redis

from embedq.broker.keys import cache_index_key, cache_prefix, cache_stats_key

DELETE_AT_ONCE = 500


def clear_cache(
    connection: Redis, queue: str, cache_connection: Redis | None = None, shards: Sequence[str] | None = None
) -> int:
    """Remove every entry of `queue`'s cache (and its index and counters), in each of its `shards` (default:
    the queue alone); how many entries went. Entries a worker writes meanwhile start a new account.
    `cache_connection`: the cache's own Redis (CACHE_URL), which holds the queue's entries unsharded."""
    removed = 0
    for shard in shards or [queue]:
        connection.delete(cache_index_key(shard), cache_stats_key(shard))
        if cache_connection is None:
            removed += _unlink_all(connection, cache_prefix(shard))
    return removed + (_unlink_all(cache_connection, cache_prefix(queue)) if cache_connection is not None else 0)


def _unlink_all(store: Redis, prefix: str) -> int:
    removed, batch = 0, []
    for key in store.scan_iter(match=prefix + "*", count=DELETE_AT_ONCE):
        batch.append(key)
        if len(batch) == DELETE_AT_ONCE:
            removed += int(store.unlink(*batch))
            batch = []
    if batch:
        removed += int(store.unlink(*batch))
    return removed
