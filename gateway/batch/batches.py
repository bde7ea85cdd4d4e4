"""Batch records in Redis: OpenAI's batch object, its status and request counts, who owns it, and the
lease a gateway replica holds while it drives the batch. Every change a driver makes is fenced by
its lease (one server-side script each), so a replica that lost the lease changes nothing."""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson
from redis.asyncio import Redis as AsyncRedis

from embedq.broker.keys import BatchKeys
from embedq.broker.scripts import bind
from embedq.gateway.batch import records
from embedq.gateway.openai_shape import OpenAIError, shown
from embedq.producer.stats import as_text

COMPLETION_WINDOW = "24h"
WINDOW_SECONDS = 24 * 3600
FINAL = ("completed", "failed", "expired", "cancelled")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
CANCELLABLE = ("validating", "in_progress")
LEASE_MS = 15_000  # a replica that stops renewing loses its batches this long after

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
    def __init__(self, connection: AsyncRedis, retention: float, keys: BatchKeys) -> None:
        self.connection, self.retention, self.keys = connection, retention, keys
        self._take = bind(connection, "take_lease")
        self._release = bind(connection, "release_lease")
        self._transition = bind(connection, "transition_batch")
        self._chunk_done = bind(connection, "count_chunk")
        self._cancel = bind(connection, "cancel_batch")
        self._create = bind(connection, "create_batch")

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
        keys = [self.keys.batch(batch_id), self.keys.batches, self.keys.active, self.keys.file(input_file_id)]
        pairs = [item for name, value in record.items() for item in (name, value)]
        if not await self._create(keys, [batch_id, now + int(self.retention), now, *pairs]):
            raise OpenAIError(404, f"no file {shown(input_file_id)}", param="input_file_id", code="file_not_found")
        return public({k: str(v) for k, v in record.items()})

    async def record(self, batch_id: str, owner: str | None = None) -> dict[str, str]:
        """The batch's fields; 404 if there is none or (owner given and not "") another key owns it."""
        record = await records.read(self.connection, self.keys.batch(batch_id))
        if not records.visible(record, owner):
            raise not_found(batch_id)
        return record

    async def get(self, batch_id: str, owner: str) -> dict[str, Any]:
        return public(await self.record(batch_id, owner))

    async def page(self, owner: str, after: str | None, limit: int) -> dict[str, Any]:
        """Newest first; `after`: the last id of the previous page."""
        return await records.page(
            self.connection,
            self.keys.batches,
            self.keys.batch,
            retention=self.retention,
            owner=owner,
            after=after,
            limit=limit,
            keep=lambda _: True,
            public=public,
        )

    async def cancel(self, batch_id: str, owner: str) -> dict[str, Any]:
        await self.record(batch_id, owner)
        cancellable = ",".join(CANCELLABLE)
        outcome = as_text(
            await self._cancel([self.keys.batch(batch_id)], [int(time.time()), cancellable, "cancelling"])
        )
        if outcome != "cancelling":
            raise OpenAIError(
                409, f"batch {batch_id} is {outcome}: only a validating or in-progress batch can be cancelled"
            )
        return public(await self.record(batch_id))

    async def active(self) -> list[str]:
        return sorted(as_text(i) for i in await self.connection.smembers(self.keys.active))

    async def take_lease(self, batch_id: str, holder: str) -> bool:
        """Take the batch's lease if it is free, or renew it if `holder` has it."""
        return bool(await self._take([self.keys.lease(batch_id)], [holder, LEASE_MS]))

    async def release_lease(self, batch_id: str, holder: str) -> None:
        await self._release([self.keys.lease(batch_id)], [holder])

    async def transition(self, batch_id: str, holder: str, allowed: tuple[str, ...], **fields: Any) -> str:
        """Set `fields` if `holder` holds the lease and the status is one of `allowed`: "ok", or the
        status found. LeaseLost when another replica holds the lease."""
        pairs: list[Any] = [item for name, value in fields.items() for item in (name, value)]
        keys = [self.keys.batch(batch_id), self.keys.lease(batch_id), self.keys.active, self.keys.metrics]
        outcome = as_text(await self._transition(keys, [holder, ",".join(allowed), batch_id, ",".join(FINAL), *pairs]))
        if outcome == "lease lost":
            raise LeaseLost(batch_id)
        return outcome

    async def chunk_done(self, batch: dict[str, str], holder: str, chunk: int, completed: int, failed: int) -> None:
        batch_id = batch["id"]
        keys = [self.keys.batch(batch_id), self.keys.lease(batch_id), self.keys.done(batch_id), self.keys.metrics]
        expires = int(batch["created_at"]) + int(self.retention)
        if not await self._chunk_done(keys, [holder, chunk, completed, failed, expires]):
            raise LeaseLost(batch_id)

    async def done_chunks(self, batch_id: str) -> set[int]:
        return {int(as_text(n)) for n in await self.connection.smembers(self.keys.done(batch_id))}

    async def track_jobs(self, batch_id: str, job_ids: list[str]) -> None:
        """Note jobs about to be sent, so that whoever ends the batch or takes it over can cancel them."""
        key = self.keys.jobs(batch_id)
        async with self.connection.pipeline(transaction=True) as pipe:
            pipe.sadd(key, *job_ids)
            pipe.expire(key, WINDOW_SECONDS * 2)
            await pipe.execute()

    async def untrack_jobs(self, batch_id: str, job_ids: list[str]) -> None:
        if job_ids:
            await self.connection.srem(self.keys.jobs(batch_id), *job_ids)

    async def tracked_jobs(self, batch_id: str) -> list[str]:
        return [as_text(job_id) for job_id in await self.connection.smembers(self.keys.jobs(batch_id))]

    async def forget_jobs(self, batch_id: str) -> None:
        await self.connection.delete(self.keys.jobs(batch_id))

    async def forget_active(self, batch_id: str) -> None:
        """A batch in the active set whose record expired or was deleted."""
        await self.connection.srem(self.keys.active, batch_id)


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
