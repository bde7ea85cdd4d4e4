"""`embedq cache clear`: a queue's cached vectors removed, and its accounting with them."""

from __future__ import annotations

from redis import Redis

from embedq.broker.keys import cache_index_key, cache_prefix, cache_stats_key

DELETE_AT_ONCE = 500


def clear_cache(connection: Redis, queue: str, cache_connection: Redis | None = None) -> int:
    """Remove every entry of `queue`'s cache (and its index and counters); how many entries went. Entries
    a worker writes meanwhile start a new account. `cache_connection`: the cache's own Redis (CACHE_URL)."""
    connection.delete(cache_index_key(queue), cache_stats_key(queue))
    store = cache_connection or connection
    removed, batch = 0, []
    for key in store.scan_iter(match=cache_prefix(queue) + "*", count=DELETE_AT_ONCE):
        batch.append(key)
        if len(batch) == DELETE_AT_ONCE:
            removed += int(store.unlink(*batch))
            batch = []
    if batch:
        removed += int(store.unlink(*batch))
    return removed
