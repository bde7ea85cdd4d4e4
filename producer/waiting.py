"""The client's reads as steps without I/O: status, result, and waiting for many jobs at once. Each
step yields the commands of one pipeline (or a pause) and is sent back their replies; EmbedClient
runs the steps over redis-py and AsyncEmbedClient over redis.asyncio, so what a reply means is
defined once."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from embedq.producer import rq_compat
from embedq.producer.errors import JobFailed, JobNotFound, JobTimeout, QueueUnavailable
from embedq.producer.protocol import EmbedResult, result_key, unpack_result

Status = Literal["queued", "started", "finished", "failed", "unknown"]
T = TypeVar("T")

WAIT_SLICE_MS = 5_000  # a blocking read lasts at most this long (below the client's socket timeout)
FIRST_SLICE_MS = 100  # the first read blocks briefly, so a job that does not exist is reported at once
OUTAGE_PAUSE_S = 0.25  # between tries while Redis does not answer

_STATUS: dict[str, Status] = {
    "queued": "queued",
    "deferred": "queued",
    "scheduled": "queued",
    "created": "queued",
    "started": "started",
    "finished": "finished",
    "failed": "failed",
    "stopped": "failed",
    "canceled": "failed",
}


@dataclass(frozen=True)
class Send:
    """Send these commands (a method name of a redis-py pipeline, its args, its kwargs) in one pipeline."""

    commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]]


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Outage:
    """What a step is sent back when Redis did not answer."""

    error: Exception
    where: str  # the Redis URL, password masked

    def unavailable(self) -> QueueUnavailable:
        return QueueUnavailable(f"Redis at {self.where} did not answer: {self.error}")


Steps = Generator[Send | Pause, Any, T]


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _answered(reply: Any) -> list[Any]:
    if isinstance(reply, Outage):
        raise reply.unavailable()
    return list(reply)


def status_steps(job_id: str) -> Steps[Status]:
    """queued | started | finished | failed | unknown, in one round trip."""
    has_result, raw = _answered(
        (
            yield Send(
                [("exists", (result_key(job_id),), {}), ("hget", (rq_compat.job_key(job_id), rq_compat.STATUS), {})]
            )
        )
    )
    if raw is None:
        return "finished" if has_result else "unknown"
    return _STATUS.get(_text(raw) or "", "unknown")


def result_steps(job_id: str) -> Steps[EmbedResult | None]:
    """The result if the job finished, None while it is queued or running; JobFailed / JobNotFound. One round trip."""
    data, raw, latest = _answered(
        (
            yield Send(
                [
                    ("get", (result_key(job_id),), {}),
                    ("hget", (rq_compat.job_key(job_id), rq_compat.STATUS), {}),
                    ("xrevrange", (rq_compat.result_stream_key(job_id), "+", "-"), {"count": 1}),
                ]
            )
        )
    )
    if data is not None:
        return unpack_result(data)
    status = _STATUS.get(_text(raw) or "", "unknown")
    if status == "failed":
        reason = rq_compat.failure_reason(job_id, latest[0]) if latest else None
        raise JobFailed(job_id, reason or f"job ended with status {_text(raw)}")
    if raw is None:
        raise JobNotFound(f"no job {job_id} in Redis (never enqueued, or expired after RESULT_TTL)")
    return None  # queued, running, or finished a moment ago: the result is there on the next read


@dataclass
class _Waiting:
    job_ids: list[str]
    results: dict[str, EmbedResult] = field(default_factory=dict)

    @property
    def pending(self) -> list[str]:
        return [job_id for job_id in self.job_ids if job_id not in self.results]


def wait_steps(
    job_ids: Sequence[str], timeout: float, clock: Callable[[], float] = time.monotonic
) -> Steps[list[EmbedResult]]:
    """Block until every job has ended: each round is one pipeline (the results already written, and
    one XREAD on the result streams of all jobs still pending), so many jobs cost as many round trips
    as one. JobFailed for the first job found failed, JobNotFound for one that does not exist,
    JobTimeout at the deadline."""
    deadline = clock() + timeout
    waiting = _Waiting(list(dict.fromkeys(job_ids)))
    first, last_error = True, None
    succeeded_without_result: set[str] = set()  # seen once: a moment between the two writes; twice: expired
    while pending := waiting.pending:
        remaining_ms = int((deadline - clock()) * 1000)
        if remaining_ms <= 0:
            total = len(waiting.job_ids)
            what = f"job {pending[0]}" if total == 1 else f"{len(pending)} of {total} jobs"
            raise JobTimeout(
                f"{what} did not finish within {timeout:g} s"
                + (f" (Redis did not answer: {last_error})" if last_error else "")
            )
        block = max(1, min(remaining_ms, FIRST_SLICE_MS if first else WAIT_SLICE_MS))
        streams = {rq_compat.result_stream_key(job_id): job_id for job_id in pending}
        commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
            ("mget", ([result_key(job_id) for job_id in pending],), {})
        ]
        if first:
            commands += [("exists", (rq_compat.job_key(job_id), result_key(job_id)), {}) for job_id in pending]
        commands.append(("xread", (dict.fromkeys(streams, "0-0"),), {"block": block, "count": 1}))
        reply = yield Send(commands)
        if isinstance(reply, Outage):
            last_error = reply.error
            yield Pause(min(OUTAGE_PAUSE_S, max(0.0, deadline - clock())))
            continue
        last_error = None
        datas, *existing, ended = reply
        for job_id, data in zip(pending, datas):
            if data is not None:
                waiting.results[job_id] = unpack_result(data)
        for job_id, found in zip(pending, existing):
            if not found:
                raise JobNotFound(f"no job {job_id} in Redis (never enqueued, or expired after RESULT_TTL)")
        for stream, entries in ended or []:
            job_id = streams[_text(stream) or ""]
            if job_id in waiting.results:
                continue
            reason = rq_compat.failure_reason(job_id, entries[-1])
            if reason is not None:
                raise JobFailed(job_id, reason)
            if job_id in succeeded_without_result:
                raise JobNotFound(f"job {job_id} finished, but its result expired after RESULT_TTL")
            succeeded_without_result.add(job_id)
        if not first and not ended:  # a whole slice without news: are the jobs still there?
            reply = yield Send([("exists", (rq_compat.job_key(j), result_key(j)), {}) for j in waiting.pending])
            if not isinstance(reply, Outage):
                for job_id, found in zip(waiting.pending, reply):
                    if not found:
                        raise JobNotFound(f"no job {job_id} in Redis (never enqueued, or expired after RESULT_TTL)")
        first = False
    return [waiting.results[job_id] for job_id in job_ids]


def run_steps(steps: Steps[T], execute: Callable[[Send], Any], pause: Callable[[float], None]) -> T:
    """Drive `steps` with a blocking `execute` (a pipeline's replies, or an Outage)."""
    reply: Any = None
    while True:
        try:
            step = steps.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        if isinstance(step, Pause):
            pause(step.seconds)
            reply = None
        else:
            reply = execute(step)
