"""rq's Job made safe to run from Redis: its stored call read by embedq's own hook (never imported by
name), its data inflated to a bound, no callbacks, no retry after a permanent failure; and rq's
timeout, with a reason that names the setting."""

from __future__ import annotations

import zlib
from datetime import datetime
from types import FrameType
from typing import Any
from uuid import uuid4

from rq.job import Job, validate_job_id
from rq.timeouts import UnixSignalDeathPenalty
from rq.utils import now

StoredCall = tuple[Any, Any, list[Any], dict[str, Any]]  # func_name, instance, args, kwargs
TIMES = ("created_at", "enqueued_at", "started_at", "ended_at", "last_heartbeat")  # rq's ISO 8601 times of a job


# What take_pass.lua puts in place of job data too large to fetch (followed by its size in bytes): a
# stored job's data is zlib (0x78...) or msgpack, never this.
OVERSIZED = b"embedq-oversized:"


INFLATE_STEP = 1024 * 1024  # bytes decompressed at a time into the one growing buffer


def inflate(stored: bytes, limit: int) -> bytes | bytearray:
    """rq's stored job data decompressed as its restore would, but to at most `limit` + 1 bytes, so a
    zlib bomb stops there (the caller refuses what is over `limit`); uncompressed data and the
    OVERSIZED mark come back as they are. The output grows in one buffer a step at a time (zlib's own
    bounded decompress joins its pieces at the end: twice the memory at the peak)."""
    if stored.startswith(OVERSIZED):
        return stored
    squeeze, out = zlib.decompressobj(), bytearray()
    tail = stored
    try:
        while len(out) <= limit and not squeeze.eof:
            piece = squeeze.decompress(tail, min(INFLATE_STEP, limit + 1 - len(out)))
            tail = squeeze.unconsumed_tail
            if not piece:
                break
            out += piece
    except zlib.error:
        return stored  # rq stored it uncompressed (its restore falls back the same way)
    return out  # a bytearray: msgpack reads it in place, and bytes() would copy it


def restored(blank: Job, job_id: str, fields: dict[str, Any]) -> Job:
    """A new job of `blank`'s class as `type(blank)(job_id, connection, serializer).restore(fields)` builds it,
    copied from `blank` (made once: no id, nothing restored). On the path of every pass, rq's __init__
    checks the serializer against a runtime Protocol and its restore parses each time with strptime: tens
    of µs each; the copy skips the first, and the times are read by datetime.fromisoformat."""
    job = object.__new__(type(blank))
    job.__dict__.update({k: v.copy() if isinstance(v, list | dict) else v for k, v in blank.__dict__.items()})
    job._id, job.created_at = job_id, now()
    times = {name: fields.pop(name) for name in TIMES if fields.get(name)}
    job.restore(fields)
    for name, value in times.items():
        setattr(job, name, datetime.fromisoformat(value.decode() if isinstance(value, bytes) else value))
    return job


class GuardedJob(Job):
    """An rq Job that reads its stored call through `read_call` (which must not raise: rq reads
    func_name again while handling a failure), decompresses its data to at most `data_limit` + 1
    bytes, runs no callbacks, is not retried once marked `permanent_failure`, and takes a shard's ids."""

    permanent_failure = False
    data_limit: int = 2**62

    def __init__(self, id: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(None, *args, **kwargs)
        self.id = id

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = str(uuid4())  # as rq's own getter
        return self._id

    @id.setter
    def id(self, value: str | None) -> None:
        """rq's ids, or a shard's (broker/shards.py: its `{tag}` first, so the job's keys share its slot)."""
        if value is not None:
            tag, closed, rest = value[1:].partition("}") if value.startswith("{") else ("", "", value)
            validate_job_id(tag + rest if closed and tag else value)
        self._id = value

    def read_call(self, data: bytes) -> StoredCall:
        raise NotImplementedError

    def restore(self, raw_data: Any) -> None:
        fields = dict(raw_data)
        name = next((key for key in fields if key in ("data", b"data")), None)
        stored = fields.get(name) if name is not None else None
        if stored is not None:
            fields[name] = b""  # rq's own decompress, unbounded, sees nothing
        super().restore(fields)
        if stored is not None:
            self.data = inflate(stored, self.data_limit)

    def _deserialize_data(self) -> None:
        self._func_name, self._instance, self._args, self._kwargs = self.read_call(self.data)

    @property
    def should_retry(self) -> bool:
        return not self.permanent_failure and bool(super().should_retry)

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None


class NamedTimeoutPenalty(UnixSignalDeathPenalty):
    """rq's SIGALRM timeout, with a reason that names the setting. Python runs the handler between
    bytecodes, so a pass is stopped after the inference micro-batch it is in."""

    def handle_death_penalty(self, signum: int, frame: FrameType | None) -> None:
        raise self._exception(f"job ran past JOB_TIMEOUT={self._timeout} s and was stopped")
