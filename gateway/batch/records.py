"""What the Batch API's files and batches share in Redis: a record is a hash (read as text), owned by
the hash of the key that made it, listed newest first from a sorted set of ids by creation time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from redis.asyncio import Redis as AsyncRedis

from embedq.producer.stats import as_text

PIPELINE = 200  # records read in one round trip while listing


def visible(record: dict[str, str], owner: str | None) -> bool:
    """Whether a caller with key hash `owner` may see the record ("" or None: no keys configured, or an operator)."""
    return bool(record) and (not owner or record.get("owner") == owner)


async def read(connection: AsyncRedis, key: str) -> dict[str, str]:
    """The record's fields as text; {} if there is none."""
    return {as_text(k): as_text(v) for k, v in (await connection.hgetall(key)).items()}


async def page(
    connection: AsyncRedis,
    index: str,
    key_of: Callable[[str], str],
    *,
    retention: float,
    owner: str,
    after: str | None,
    limit: int,
    keep: Callable[[dict[str, str]], bool],
    public: Callable[[dict[str, str]], dict[str, Any]],
) -> dict[str, Any]:
    """One page of OpenAI's list shape over the records in `index`, newest first, that `owner` may see and
    `keep` keeps; `after`: the last id of the previous page. Ids past `retention` leave the index."""
    await connection.zremrangebyscore(index, "-inf", time.time() - retention)
    ids = [as_text(cast(bytes, i)) for i in await connection.zrange(index, 0, -1, desc=True)]
    if after in ids:
        ids = ids[ids.index(after) + 1 :]
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), PIPELINE):
        async with connection.pipeline(transaction=False) as pipe:
            for record_id in ids[start : start + PIPELINE]:
                pipe.hgetall(key_of(record_id))
            replies = await pipe.execute()
        for raw in replies:
            record = {as_text(k): as_text(v) for k, v in raw.items()}
            if visible(record, owner) and keep(record):
                found.append(public(record))
        if len(found) > limit:
            break
    shown = found[:limit]
    return {
        "object": "list",
        "data": shown,
        "first_id": shown[0]["id"] if shown else None,
        "last_id": shown[-1]["id"] if shown else None,
        "has_more": len(found) > limit,
    }
