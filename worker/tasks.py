"""The one task rq runs: embed a job's texts, write the result and timing metrics to Redis.

EmbedJob makes sure that nothing else can run: rq would otherwise import and call whatever
function name a job hash carries."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq import get_current_job
from rq.job import Job

from embedq.config import Settings
from embedq.producer.errors import EmbedqError, InvalidInput
from embedq.producer.protocol import (
    EMBED_TASK,
    TIMING_FIELDS,
    TIMINGS_MAXLEN,
    WORKER_FACTS_TTL,
    EmbedRequest,
    EmbedResult,
    Limits,
    MsgpackSerializer,
    metrics_key,
    pack_result,
    result_key,
    timings_key,
    worker_key,
)
from embedq.producer.rq_compat import GuardedJob, StoredCall
from embedq.worker.model.encoder import Encoded, Encoder

UNREADABLE = "<unreadable payload>"
# Jobs enqueued by embedq 0.1 name the task by its old module path: accepted until the next release.
LEGACY_TASK_NAMES = ("worker.tasks.embed",)
TASK_NAMES = (EMBED_TASK, *LEGACY_TASK_NAMES)  # func_name of a job whose payload could not be parsed


class ForbiddenTask(EmbedqError):
    """A job names a function other than the embed task; it is refused, nothing is imported."""


# One atomic step, one round trip: the result (once: a re-run of a job whose result exists writes
# nothing) and its counts. KEYS: result, metrics, timings, worker facts. ARGV: result bytes, TTL,
# timings stream length, facts TTL, then USAGE_FIELDS and TIMING_FIELDS values in order.
WRITE_RESULT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'jobs', 1)
local usage = {'texts', 'tokens', 'truncated'}
for n, name in ipairs(usage) do redis.call('HINCRBY', KEYS[2], name, ARGV[4 + n]) end
local timings = {'queue_ms', 'tokenize_ms', 'infer_ms', 'pool_ms', 'total_ms'}
local record = {}
for n, name in ipairs(timings) do
    redis.call('HINCRBYFLOAT', KEYS[2], name, ARGV[7 + n])
    table.insert(record, name)
    table.insert(record, ARGV[7 + n])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(record))
redis.call('HINCRBY', KEYS[4], 'jobs_done', 1)
redis.call('EXPIRE', KEYS[4], ARGV[4])
return 1
"""
USAGE_FIELDS = ("texts", "tokens", "truncated")


@dataclass
class TaskContext:
    """What the task needs from its process: built once at worker start-up."""

    encoder: Encoder
    settings: Settings
    connection: Redis
    worker_name: str
    precomputed: dict[str, Encoded] = field(default_factory=dict)  # coalesced jobs' vectors, by job id

    def __post_init__(self) -> None:
        self.write_result = self.connection.register_script(WRITE_RESULT_SCRIPT)


_context: TaskContext | None = None


def install(context: TaskContext) -> None:
    """Called once by the worker process before it takes jobs (rq runs tasks in this process)."""
    global _context
    _context = context


class EmbedJob(GuardedJob):
    """An rq Job that can only ever call `embed`: no import by name, no callbacks, and a payload
    that must be one msgpack map under the size limit."""

    payload_error: InvalidInput | None = None

    def read_call(self, data: bytes) -> StoredCall:
        """Parse the stored job; never raises: an unusable payload is kept as `payload_error`,
        which `func` raises."""
        try:
            return self._parse(data)
        except InvalidInput as error:
            self.payload_error = error
            return UNREADABLE, None, [], {}

    @staticmethod
    def _parse(data: bytes) -> StoredCall:
        limits = _limits()
        if len(data) > limits.max_payload_bytes:
            raise InvalidInput(f"job payload is {len(data)} bytes, more than the {limits.max_payload_bytes}-byte limit")
        try:
            func_name, instance, args, kwargs = MsgpackSerializer.loads(data)
        except Exception as error:
            raise InvalidInput(
                f"job payload is not a msgpack embed job (pickle and other formats are refused): "
                f"{type(error).__name__}: {error}"
            ) from None
        if not isinstance(args, list) or len(args) != 1 or kwargs:
            raise InvalidInput("job payload must carry exactly one positional argument, the request map")
        return func_name, instance, args, {}

    @property
    def func(self) -> Callable[[Any], dict[str, Any]]:
        if self.payload_error is not None:
            raise self.payload_error
        if self.func_name not in TASK_NAMES or self.instance is not None:
            raise ForbiddenTask(
                f"refusing job {self.id}: it names {self.func_name!r}; this worker runs only {EMBED_TASK}"
            )
        return embed


def _require_context() -> TaskContext:
    if _context is None:
        raise RuntimeError("embed ran outside an embedq worker process (no encoder installed)")
    return _context


def _limits() -> Limits:
    return _require_context().settings.limits


def precompute(jobs: list[Job]) -> None:
    """One inference pass for several waiting jobs; each job's own task run then only writes its
    result. Jobs with a bad payload are left out here and fail on their own when they run."""
    context = _require_context()
    ready: list[tuple[str, EmbedRequest]] = []
    for job in jobs:
        try:
            job.func  # noqa: B018 - refuses bad payloads and other functions
            ready.append((job.id, EmbedRequest.from_payload(job.args[0], _limits())))
        except (InvalidInput, ForbiddenTask):
            continue
    if len(ready) < 2:
        return
    try:
        encoded = context.encoder.encode_many([request for _, request in ready])
    except InvalidInput:
        return  # e.g. dimensions above the model's: each job then fails alone, with its reason
    context.precomputed.update(zip((job_id for job_id, _ in ready), encoded))
    with context.connection.pipeline(transaction=False) as pipe:
        pipe.hincrby(metrics_key(context.settings.queue), "coalesced_passes", 1)
        pipe.hincrby(metrics_key(context.settings.queue), "coalesced_jobs", len(ready))
        pipe.execute()


def forget_precomputed() -> None:
    """Drop vectors no job picked up (a job that failed before its task ran)."""
    _require_context().precomputed.clear()


def embed(payload: Any) -> dict[str, Any]:
    """Embed one job; returns a small summary (plain types: rq's msgpack result must encode it)."""
    context = _require_context()
    started = time.time()
    job = get_current_job()
    job_id = job.id if job else "local"
    settings = context.settings
    request = EmbedRequest.from_payload(payload, _limits())

    encoded = context.precomputed.pop(job_id, None) or context.encoder.encode(
        request.texts,
        instruction=request.instruction,
        normalize=request.normalize,
        dimensions=request.dimensions,
        prompt_name=request.prompt_name,
    )
    finished = time.time()
    enqueued = job.enqueued_at.timestamp() if job and job.enqueued_at else started
    began = min(started, encoded.started)  # a coalesced job's work began with the shared pass
    queue_ms = max(0.0, (began - enqueued) * 1000)
    timings = {
        "queue_ms": queue_ms,
        **encoded.timings,
        "total_ms": max(0.0, (finished - enqueued) * 1000),
    }
    usage = {"texts": len(request.texts), "tokens": encoded.tokens, "truncated": encoded.truncated}
    result = EmbedResult(
        job_id=job_id,
        embeddings=encoded.vectors,
        model=context.encoder.spec.name,
        dim=int(encoded.vectors.shape[1]),
        usage=usage,
        timings=timings,
        worker=context.worker_name,
    )
    key = result_key(job_id)
    written = context.write_result(
        keys=[key, metrics_key(settings.queue), timings_key(settings.queue), worker_key(context.worker_name)],
        args=[
            pack_result(result),
            settings.result_ttl,
            TIMINGS_MAXLEN,
            WORKER_FACTS_TTL,
            *(usage[name] for name in USAGE_FIELDS),
            *(f"{timings[name]:.3f}" for name in TIMING_FIELDS),
        ],
    )
    if not written:  # an earlier attempt wrote it, then its worker died before rq heard of it
        return {"result_key": key, "texts": len(request.texts), "already_written": True}
    return {"result_key": key, "texts": len(request.texts), "dim": result.dim, "tokens": encoded.tokens}
