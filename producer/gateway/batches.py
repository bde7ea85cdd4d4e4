"""Batch records in Redis: OpenAI's batch object, its status and request counts, who owns it, and the
lease a gateway replica holds while it drives the batch. Every change a driver makes is fenced by
its lease (one server-side script each), so a replica that lost the lease changes nothing."""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson
from redis.asyncio import Redis as AsyncRedis

from embedq.producer.gateway import records
from embedq.producer.gateway.openai_shape import OpenAIError, shown
from embedq.producer.protocol import (
    ACTIVE_BATCHES_KEY,
    BATCH_METRICS_KEY,
    BATCHES_KEY,
    batch_done_key,
    batch_jobs_key,
    batch_key,
    batch_lease_key,
    file_key,
)
from embedq.producer.stats import as_text

COMPLETION_WINDOW = "24h"
WINDOW_SECONDS = 24 * 3600
FINAL = ("completed", "failed", "expired", "cancelled")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
LEASE_MS = 15_000  # a replica that stops renewing loses its batches this long after

# KEYS: the lease. ARGV: this replica's id, lease ms. Taken when free; renewed when ours.
TAKE_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: the lease. ARGV: this replica's id. Ended if ours.
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: the batch, the lease, the active set, the batch metrics. ARGV: replica id, allowed statuses
# (comma-separated), the batch id, then field/value pairs. Only the lease holder, only from an allowed
# status. A final status takes the batch out of the active set, ends the lease and is counted.
TRANSITION = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'lease lost' end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'gone' end
if not string.find(',' .. ARGV[2] .. ',', ',' .. status .. ',', 1, true) then return status end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
local new = redis.call('HGET', KEYS[1], 'status')
if new == 'completed' or new == 'failed' or new == 'expired' or new == 'cancelled' then
    redis.call('SREM', KEYS[3], ARGV[3])
    redis.call('DEL', KEYS[2])
    redis.call('HINCRBY', KEYS[4], 'ended:' .. new, 1)
end
return 'ok'
"""

# KEYS: the batch, the lease, the done set, the batch metrics. ARGV: replica id, chunk number, lines
# completed, failed, when the batch's record expires (unix s). A chunk counts once, however often it ran.
CHUNK_DONE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('SADD', KEYS[3], ARGV[2]) == 0 then return 1 end
redis.call('EXPIREAT', KEYS[3], ARGV[5])
redis.call('HINCRBY', KEYS[1], 'completed', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'failed', ARGV[4])
redis.call('HINCRBY', KEYS[4], 'lines:completed', ARGV[3])
redis.call('HINCRBY', KEYS[4], 'lines:failed', ARGV[4])
return 1
"""

# KEYS: the batch, the batches index, the active set, the input file's record. ARGV: the batch id, the
# record's expiry (unix s), its creation time, then field/value pairs. Created only while the input file
# is there (a file is deleted only while no active batch reads it: files.py's DELETE).
CREATE = """
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('EXPIREAT', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

# KEYS: the batch. ARGV: the time. From validating or in_progress only.
CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'validating' or status == 'in_progress' then
    redis.call('HSET', KEYS[1], 'status', 'cancelling', 'cancelling_at', ARGV[1])
    return 'cancelling'
end
return status
"""

TIMES = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


class LeaseLost(Exception):
    """This replica no longer holds the batch's lease: another drives it."""


def not_found(batch_id: str) -> OpenAIError:
    return OpenAIError(404, f"no batch {shown(batch_id)}", param="batch_id", code="batch_not_found")


class Batches:
    def __init__(self, connection: AsyncRedis, retention: float) -> None:
        self.connection, self.retention = connection, retention
        self._take = connection.register_script(TAKE_LEASE)
        self._release = connection.register_script(RELEASE_LEASE)
        self._transition = connection.register_script(TRANSITION)
        self._chunk_done = connection.register_script(CHUNK_DONE)
        self._cancel = connection.register_script(CANCEL)
        self._create = connection.register_script(CREATE)

    async def create(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: dict[str, str] | None,
        owner: str,
        limits: tuple[int, int, int],
    ) -> dict[str, Any]:
        """A new batch, validating. `limits`: the creating gateway's BATCH_MAX_LINES, FILES_MAX_BYTES and
        HTTP_MAX_BODY_BYTES (a line's limit), kept with the batch so whichever replica validates it applies them."""
        batch_id = f"batch_{secrets.token_hex(12)}"
        now = int(time.time())
        record: dict[Any, Any] = {  # redis-py's Mapping type is invariant in its keys
            "id": batch_id,
            "endpoint": endpoint,
            "input_file_id": input_file_id,
            "completion_window": COMPLETION_WINDOW,
            "status": "validating",
            "created_at": now,
            "expires_at": now + WINDOW_SECONDS,
            "total": 0,
            "completed": 0,
            "failed": 0,
            "metadata": orjson.dumps(metadata).decode(),
            "owner": owner,
            "max_lines": limits[0],
            "max_bytes": limits[1],
            "max_line_bytes": limits[2],
        }
        keys = [batch_key(batch_id), BATCHES_KEY, ACTIVE_BATCHES_KEY, file_key(input_file_id)]
        pairs = [item for name, value in record.items() for item in (name, value)]
        if not await self._create(keys=keys, args=[batch_id, now + int(self.retention), now, *pairs]):
            raise OpenAIError(404, f"no file {shown(input_file_id)}", param="input_file_id", code="file_not_found")
        return public({k: str(v) for k, v in record.items()})

    async def record(self, batch_id: str, owner: str | None = None) -> dict[str, str]:
        """The batch's fields; 404 if there is none or (owner given and not "") another key owns it."""
        record = await records.read(self.connection, batch_key(batch_id))
        if not records.visible(record, owner):
            raise not_found(batch_id)
        return record

    async def get(self, batch_id: str, owner: str) -> dict[str, Any]:
        return public(await self.record(batch_id, owner))

    async def page(self, owner: str, after: str | None, limit: int) -> dict[str, Any]:
        """Newest first; `after`: the last id of the previous page."""
        return await records.page(
            self.connection,
            BATCHES_KEY,
            batch_key,
            retention=self.retention,
            owner=owner,
            after=after,
            limit=limit,
            keep=lambda _: True,
            public=public,
        )

    async def cancel(self, batch_id: str, owner: str) -> dict[str, Any]:
        await self.record(batch_id, owner)
        outcome = as_text(await self._cancel(keys=[batch_key(batch_id)], args=[int(time.time())]))
        if outcome in ("completed", "failed", "expired", "finalizing"):
            raise OpenAIError(
                409, f"batch {batch_id} is {outcome}: only a validating or in-progress batch can be cancelled"
            )
        return public(await self.record(batch_id))

    async def active(self) -> list[str]:
        return sorted(as_text(i) for i in await self.connection.smembers(ACTIVE_BATCHES_KEY))

    async def take_lease(self, batch_id: str, holder: str) -> bool:
        """Take the batch's lease if it is free, or renew it if `holder` has it."""
        return bool(await self._take(keys=[batch_lease_key(batch_id)], args=[holder, LEASE_MS]))

    async def release_lease(self, batch_id: str, holder: str) -> None:
        await self._release(keys=[batch_lease_key(batch_id)], args=[holder])

    async def transition(self, batch_id: str, holder: str, allowed: tuple[str, ...], **fields: Any) -> str:
        """Set `fields` if `holder` holds the lease and the status is one of `allowed`: "ok", or the
        status found. LeaseLost when another replica holds the lease."""
        pairs: list[Any] = [item for name, value in fields.items() for item in (name, value)]
        keys = [batch_key(batch_id), batch_lease_key(batch_id), ACTIVE_BATCHES_KEY, BATCH_METRICS_KEY]
        outcome = as_text(await self._transition(keys=keys, args=[holder, ",".join(allowed), batch_id, *pairs]))
        if outcome == "lease lost":
            raise LeaseLost(batch_id)
        return outcome

    async def chunk_done(self, batch: dict[str, str], holder: str, chunk: int, completed: int, failed: int) -> None:
        batch_id = batch["id"]
        keys = [batch_key(batch_id), batch_lease_key(batch_id), batch_done_key(batch_id), BATCH_METRICS_KEY]
        expires = int(batch["created_at"]) + int(self.retention)
        if not await self._chunk_done(keys=keys, args=[holder, chunk, completed, failed, expires]):
            raise LeaseLost(batch_id)

    async def done_chunks(self, batch_id: str) -> set[int]:
        return {int(as_text(n)) for n in await self.connection.smembers(batch_done_key(batch_id))}

    async def track_jobs(self, batch_id: str, job_ids: list[str]) -> None:
        """Note jobs about to be sent, so that whoever ends the batch or takes it over can cancel them."""
        key = batch_jobs_key(batch_id)
        async with self.connection.pipeline(transaction=True) as pipe:
            pipe.sadd(key, *job_ids)
            pipe.expire(key, WINDOW_SECONDS * 2)
            await pipe.execute()

    async def untrack_jobs(self, batch_id: str, job_ids: list[str]) -> None:
        if job_ids:
            await self.connection.srem(batch_jobs_key(batch_id), *job_ids)

    async def tracked_jobs(self, batch_id: str) -> list[str]:
        return [as_text(job_id) for job_id in await self.connection.smembers(batch_jobs_key(batch_id))]

    async def forget_jobs(self, batch_id: str) -> None:
        await self.connection.delete(batch_jobs_key(batch_id))

    async def forget_active(self, batch_id: str) -> None:
        """A batch in the active set whose record expired or was deleted."""
        await self.connection.srem(ACTIVE_BATCHES_KEY, batch_id)


def public(record: dict[str, str]) -> dict[str, Any]:
    """OpenAI's batch object (without the owner)."""

    def number(name: str) -> int | None:
        return int(record[name]) if record.get(name) else None

    errors = orjson.loads(record["errors"]) if record.get("errors") else None
    return {
        "id": record["id"],
        "object": "batch",
        "endpoint": record["endpoint"],
        "errors": {"object": "list", "data": errors} if errors is not None else None,
        "input_file_id": record["input_file_id"],
        "completion_window": record["completion_window"],
        "status": record["status"],
        "output_file_id": record.get("output_file_id") or None,
        "error_file_id": record.get("error_file_id") or None,
        **{name: number(name) for name in TIMES},
        "request_counts": {
            "total": int(record.get("total", 0)),
            "completed": int(record.get("completed", 0)),
            "failed": int(record.get("failed", 0)),
        },
        "metadata": orjson.loads(record["metadata"]) if record.get("metadata") else None,
    }
