"""The client's reads as steps without I/O: status, result, and waiting for many jobs at once. Each
step yields the commands of one pipeline (or a pause) and is sent back their replies; EmbedClient
runs the steps over redis-py and AsyncEmbedClient over redis.asyncio, so what a reply means is
defined once."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from embedq.broker.jobs import EmbedResult, job_lifetime, unpack_refusal
from embedq.broker.rq_private.records import REFUSAL_FIELD, STATUS, entry_outcome, job_key, queue_key, result_stream_key
from embedq.broker.shards import hash_tag
from embedq.errors import JobFailed, JobLost, JobNotFound, JobTimeout
from embedq.producer.enqueue import EnqueuePlan
from embedq.producer.remote_cache import RemoteCache, lookup_steps
from embedq.producer.steps import Command, Outage, Pause, Send, Steps

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


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _answered(reply: Any) -> list[Any]:
    if isinstance(reply, Outage):
        raise reply.unavailable()
    return list(reply)


def status_steps(job_id: str) -> Steps[Status]:
    """queued | started | finished | failed | unknown, in one round trip."""
    (raw,) = _answered((yield Send([("hget", (job_key(job_id), STATUS), {})])))
    return _STATUS.get(_text(raw) or "", "unknown")


def submit_steps(plan: EnqueuePlan, remote: RemoteCache | None = None) -> Steps[list[str]]:
    """The planned jobs enqueued in one round trip (one more first with a cache Redis of its own, `remote`):
    their ids; QueueFull / InvalidInput / NotCached with none enqueued."""
    plan = yield from lookup_steps(plan, remote)
    (reply,) = _answered((yield Send([plan.command()])))
    job_ids = plan.check(reply)
    if remote is not None:
        remote.learn(plan, reply)
    return job_ids


def _not_found(job_id: str, finished: bool = False) -> JobNotFound:
    """JobLost when the job's id says its records should still be there: Redis dropped them."""
    lifetime = job_lifetime(job_id)
    what = "its result is" if finished else "its records are"
    if lifetime is not None and 0 <= (age := time.time() - lifetime[0]) < lifetime[1]:
        return JobLost(
            f"job {job_id} was enqueued {age:.0f} s ago and {what} gone from Redis, although kept at least "
            f"{lifetime[1]} s (RESULT_TTL): Redis lost them, evicted under a maxmemory-policy other than "
            "noeviction (`embedq stats` warns of it) or dropped by a restart without persistence"
        )
    if finished:
        return JobNotFound(f"job {job_id} finished, but its result expired after RESULT_TTL")
    return JobNotFound(f"no job {job_id} in Redis (never enqueued, or expired after RESULT_TTL)")


def _cluster_tag(job_id: str) -> str:
    """The hash tag of the job's shard; JobNotFound for an id without one (every job on a Cluster carries it)."""
    if tag := hash_tag(job_id):
        return tag
    raise _not_found(job_id)


def result_steps(job_id: str, cluster: bool = False) -> Steps[EmbedResult | None]:
    """The result if the job finished, None while it is queued or running; JobFailed / JobNotFound. One round trip."""
    if cluster:
        _cluster_tag(job_id)
    (raw, refusal), latest = _answered(
        (
            yield Send(
                [
                    ("hmget", (job_key(job_id), STATUS, REFUSAL_FIELD), {}),
                    ("xrevrange", (result_stream_key(job_id), "+", "-"), {"count": 1}),
                ]
            )
        )
    )
    status = _STATUS.get(_text(raw) or "", "unknown")
    result, reason = entry_outcome(job_id, latest[0]) if latest else (None, None)
    if status == "finished" and result is not None:
        return result
    if status == "failed":
        raise JobFailed(job_id, reason or f"job ended with status {_text(raw)}", unpack_refusal(refusal))
    if status in ("unknown", "finished"):
        raise _not_found(job_id, finished=status == "finished")
    return None


@dataclass
class _Waiting:
    job_ids: list[str]
    results: dict[str, EmbedResult] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)  # per job, the last result-stream entry read

    @property
    def pending(self) -> list[str]:
        return [job_id for job_id in self.job_ids if job_id not in self.results]


def _check_status(job_id: str, raw: bytes | None, read: bool) -> None:
    """What a job's status says once its result stream held nothing new (`read`: nothing at all)."""
    status = _STATUS.get(_text(raw) or "", "unknown")
    if status == "unknown":
        raise _not_found(job_id)
    if status == "failed" and read:
        raise JobFailed(job_id, f"job ended with status {_text(raw)}")
    if status == "finished" and read:
        raise _not_found(job_id, finished=True)


def waits_by_shard(
    job_ids: Sequence[str], timeout: float, cluster: bool, clock: Callable[[], float] = time.monotonic
) -> Steps[list[EmbedResult]]:
    """wait_steps; on a Redis Cluster, whose XREAD reads one node's streams, one shard's jobs after
    another's: that costs a round trip per shard, never a job's time (while one shard's are awaited the
    others' end too, and their results are read at once when their turn comes). Results in the order given."""
    if not cluster:
        return (yield from wait_steps(job_ids, timeout, clock))
    deadline = clock() + timeout
    shards: dict[str, list[int]] = {}
    for at, job_id in enumerate(job_ids):
        shards.setdefault(_cluster_tag(job_id), []).append(at)
    results: list[EmbedResult | None] = [None] * len(job_ids)
    for positions in shards.values():
        found = yield from wait_steps([job_ids[at] for at in positions], max(deadline - clock(), 0.001), clock)
        for at, result in zip(positions, found):
            results[at] = result
    return [result for result in results if result is not None]


def wait_steps(
    job_ids: Sequence[str],
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    submit: EnqueuePlan | None = None,
    remote: RemoteCache | None = None,
) -> Steps[list[EmbedResult]]:
    """Block until every job has ended. The result is in rq's result stream of the job, so one
    XREAD on the streams of all jobs still pending both waits and fetches: many jobs cost as many
    round trips as one. The first round also reads each job's status (JobNotFound at once for one
    that does not exist), or, given the `submit` that enqueues the jobs, sends it instead: submit and
    wait in one round trip (QueueFull / InvalidInput from it at once; with a cache Redis of its own,
    `remote`, its look-up goes first). JobFailed for the first job found failed, JobTimeout at the deadline."""
    deadline = clock() + timeout
    if submit is not None:
        submit = yield from lookup_steps(submit, remote)
    waiting = _Waiting(list(dict.fromkeys(job_ids)))
    check, last_error = submit is None, None  # check: read the statuses in this round
    checked = False  # a check round has run: from the next one, a job still queued is looked for in its queue
    while pending := waiting.pending:
        remaining_ms = int((deadline - clock()) * 1000)
        if remaining_ms <= 0:
            raise _timed_out(waiting, timeout, last_error)
        streams = {result_stream_key(job_id): job_id for job_id in pending}
        reply = yield Send(_round(waiting, streams, remaining_ms, check, submit))
        if isinstance(reply, Outage):
            if submit:  # not known to be enqueued: say so, as submit does
                raise reply.unavailable()
            last_error = reply.error
            yield Pause(min(OUTAGE_PAUSE_S, max(0.0, deadline - clock())))
            continue
        last_error = None
        if submit:
            submit.check(reply[0])
            if remote is not None:
                remote.learn(submit, reply[0])
            reply, submit = reply[1:], None
        *statuses, ended = reply
        news = {streams[_text(stream) or ""]: entries[-1] for stream, entries in ended or []}
        confirm = _read_news(waiting, news)
        unlisted = []
        for job_id, (raw, origin) in zip(pending, statuses):
            if job_id not in news:
                _check_status(job_id, raw, read=job_id not in waiting.seen)
                if checked and _text(raw) == "queued" and origin:
                    unlisted.append((job_id, _text(origin) or ""))
        if unlisted:
            yield from _lost_steps(unlisted)
        checked = checked or check
        if confirm:
            yield from _failed_steps(confirm)
        check = not news and not check  # a whole slice without news: are the jobs still there?
    return [waiting.results[job_id] for job_id in job_ids]


def _timed_out(waiting: _Waiting, timeout: float, last_error: Exception | None) -> JobTimeout:
    pending, total = waiting.pending, len(waiting.job_ids)
    what = f"job {pending[0]}" if total == 1 else f"{len(pending)} of {total} jobs"
    why = f" (Redis did not answer: {last_error})" if last_error else ""
    return JobTimeout(f"{what} did not finish within {timeout:g} s{why}")


def _round(
    waiting: _Waiting, streams: dict[str, str], remaining_ms: int, check: bool, submit: EnqueuePlan | None
) -> list[Command]:
    """One round's commands: the submit or the statuses (in a check round), then the XREAD that waits."""
    commands = [submit.command()] if submit else []
    if check:
        commands = [("hmget", (job_key(job_id), STATUS, "origin"), {}) for job_id in waiting.pending]
    block = max(1, min(remaining_ms, FIRST_SLICE_MS if check or submit else WAIT_SLICE_MS))
    last = {stream: waiting.seen.get(job_id, "0-0") for stream, job_id in streams.items()}
    return [*commands, ("xread", (last,), {"block": block, "count": 1})]


def _read_news(waiting: _Waiting, news: dict[str, tuple[bytes, dict[bytes, bytes]]]) -> list[str]:
    """The results in the new entries kept; the jobs whose entry is a failure, to confirm by their status."""
    confirm = []
    for job_id, entry in news.items():
        waiting.seen[job_id] = _text(entry[0]) or "0-0"
        result, _ = entry_outcome(job_id, entry)
        if result is not None:
            waiting.results[job_id] = result
        else:  # a failure, or an old one of a job re-queued since (`rq requeue`): ask its status
            confirm.append(job_id)
    return confirm


def _lost_steps(unlisted: list[tuple[str, str]]) -> Steps[None]:
    """Jobs queued for a whole slice: JobLost for one in no queue (the list read first, then the status)."""
    looks: list[Command] = [("lpos", (queue_key(origin), job_id), {}) for job_id, origin in unlisted]
    reply = yield Send(looks + [("hget", (job_key(job_id), STATUS), {}) for job_id, _ in unlisted])
    if isinstance(reply, Outage):
        return
    for (job_id, origin), position, raw in zip(unlisted, reply, reply[len(unlisted) :]):
        if position is None and _text(raw) == "queued":
            raise JobLost(
                f"job {job_id} is queued but in no queue: Redis dropped it from {origin}'s list "
                "(evicted under a maxmemory-policy other than noeviction), so no worker will take it"
            )


def _failed_steps(confirm: list[str]) -> Steps[None]:
    """JobFailed for the first of these jobs whose status says failed, with the reason its entry gives."""
    reply = yield Send(
        [("hmget", (job_key(job_id), STATUS, REFUSAL_FIELD), {}) for job_id in confirm]
        + [("xrevrange", (result_stream_key(job_id), "+", "-"), {"count": 1}) for job_id in confirm]
    )
    if isinstance(reply, Outage):
        return
    for job_id, (raw, refusal), latest in zip(confirm, reply[: len(confirm)], reply[len(confirm) :]):
        if _STATUS.get(_text(raw) or "") == "failed":
            _, reason = entry_outcome(job_id, latest[0]) if latest else (None, None)
            raise JobFailed(job_id, reason or "job failed", unpack_refusal(refusal))
