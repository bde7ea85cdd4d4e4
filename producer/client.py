"""EmbedClient: what a web app uses to enqueue texts and collect their vectors."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from embedq.producer.enqueue import GUARDED_ENQUEUE, plan_enqueue
from embedq.producer.errors import JobFailed, JobNotFound, JobTimeout, QueueUnavailable
from embedq.producer.protocol import (
    EmbedResult,
    MsgpackSerializer,
    result_key,
    unpack_result,
    validate_request,
)
from embedq.producer.rq_compat import result_stream_key
from embedq.producer.settings import ClientSettings, redact_url
from embedq.producer.stats import collect_stats

CONNECT_TIMEOUT = 2.0  # seconds: a Redis that is down fails the call fast instead of hanging it
SOCKET_TIMEOUT = 10.0
WAIT_SLICE_MS = 5_000  # wait() blocks in slices shorter than SOCKET_TIMEOUT
OUTAGE_RETRY_MS = 250

Status = Literal["queued", "started", "finished", "failed", "unknown"]

_STATUS = {
    JobStatus.QUEUED: "queued",
    JobStatus.DEFERRED: "queued",
    JobStatus.SCHEDULED: "queued",
    JobStatus.CREATED: "queued",
    JobStatus.STARTED: "started",
    JobStatus.FINISHED: "finished",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "failed",
    JobStatus.CANCELED: "failed",
}


class EmbedClient:
    """Validate → enqueue → status / result / wait, against one Redis and one queue."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        queue: str | None = None,
        settings: ClientSettings | None = None,
        connection: Redis | None = None,
    ):
        overrides = {k: v for k, v in {"redis_url": redis_url, "queue": queue}.items() if v is not None}
        base = settings or ClientSettings.load()
        self.settings = base.model_copy(update=overrides) if overrides else base
        self.connection = connection or Redis.from_url(
            self.settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
        )
        self.queue = Queue(self.settings.queue, connection=self.connection, serializer=MsgpackSerializer)
        self._guarded_enqueue = self.connection.register_script(GUARDED_ENQUEUE)
        self.limits = self.settings.limits

    def submit(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
        prompt_name: str | None = None,
    ) -> str:
        """Enqueue one batch of texts; returns its job id."""
        return self.submit_many(
            [texts], instruction=instruction, normalize=normalize, dimensions=dimensions, prompt_name=prompt_name
        )[0]

    def submit_many(
        self,
        batches: Sequence[Sequence[str]],
        instruction: str | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
        prompt_name: str | None = None,
    ) -> list[str]:
        """Enqueue several batches in one round trip; every batch is checked before any is enqueued.
        `instruction` formats texts as `Instruct: {instruction}\nQuery:{text}`; `prompt_name` picks a
        prompt the model defines (config_sentence_transformers.json, e.g. "query")."""
        requests = [
            validate_request(
                batch,
                instruction=instruction,
                normalize=normalize,
                dimensions=dimensions,
                prompt_name=prompt_name,
                limits=self.limits,
            )
            for batch in batches
        ]
        with self._reachable():
            plan = plan_enqueue(self.queue, self.settings, requests)
            return plan.check(self._guarded_enqueue(keys=plan.keys, args=plan.args))

    def status(self, job_id: str) -> Status:
        with self._reachable():
            try:
                job = Job.fetch(job_id, connection=self.connection, serializer=MsgpackSerializer)
            except NoSuchJobError:
                return "finished" if self.connection.exists(result_key(job_id)) else "unknown"
            return _STATUS.get(job.get_status(refresh=False), "unknown")  # type: ignore[return-value]

    def result(self, job_id: str) -> EmbedResult | None:
        """The result if the job is finished, None while it is queued or running; JobFailed if it failed."""
        with self._reachable():
            data: bytes | None = self.connection.get(result_key(job_id))  # type: ignore[assignment]
        if data is not None:
            return unpack_result(data)
        state = self.status(job_id)
        if state == "failed":
            raise JobFailed(job_id, self._failure_reason(job_id))
        if state == "unknown":
            raise JobNotFound(f"no job {job_id} in Redis (never enqueued, or expired after RESULT_TTL)")
        if state == "finished":  # finished between the two reads above
            with self._reachable():
                data = self.connection.get(result_key(job_id))  # type: ignore[assignment]
            return unpack_result(data) if data is not None else None
        return None

    def wait(self, job_id: str, timeout: float = 30.0) -> EmbedResult:
        """Block until the job ends (XREAD on rq's result stream, no polling); JobTimeout at the deadline."""
        deadline = time.monotonic() + timeout
        stream, key = result_stream_key(job_id), result_key(job_id)
        last_error: Exception | None = None
        while (remaining_ms := int((deadline - time.monotonic()) * 1000)) > 0:
            try:
                # One round trip: the result if it is there, else block until rq records a final
                # outcome (success, or failure after all retries) on the job's result stream.
                with self.connection.pipeline(transaction=False) as pipe:
                    pipe.get(key)
                    pipe.xread({stream: "0-0"}, block=max(1, min(remaining_ms, WAIT_SLICE_MS)), count=1)
                    data, ended = pipe.execute()
                if data is not None:
                    return unpack_result(data)
                if ended or self.status(job_id) in ("failed", "unknown", "finished"):
                    result = self.result(job_id)  # raises JobFailed / JobNotFound
                    if result is not None:
                        return result
                last_error = None
            except (RedisConnectionError, RedisTimeoutError, QueueUnavailable) as error:  # Redis may come back
                last_error = error
                time.sleep(max(0, min(remaining_ms, OUTAGE_RETRY_MS)) / 1000)
        raise JobTimeout(
            f"job {job_id} did not finish within {timeout:g} s"
            + (f" (Redis did not answer: {last_error})" if last_error else "")
        )

    def embed(self, texts: Sequence[str], timeout: float = 30.0, **options: Any) -> np.ndarray:
        """Submit, wait, and return a float32 array (len(texts), dim) in input order."""
        return self.wait(self.submit(texts, **options), timeout=timeout).embeddings

    def stats(self) -> dict[str, Any]:
        """Queue depth, live workers with their providers, counters and timing percentiles."""
        with self._reachable():
            return collect_stats(self.connection, self.queue)

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as error:
            raise QueueUnavailable(f"Redis at {redact_url(self.settings.redis_url)} did not answer: {error}") from None

    def _failure_reason(self, job_id: str) -> str:
        with self._reachable():
            job = Job.fetch(job_id, connection=self.connection, serializer=MsgpackSerializer)
            latest = job.latest_result()
        text = (latest.exc_string if latest is not None else None) or ""
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return lines[-1] if lines else f"job ended with status {job.get_status(refresh=False)}"

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> EmbedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
