"""EmbedClient: what a web app uses to enqueue texts and collect their vectors."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from embedq.broker.connection import sync_redis
from embedq.broker.failures import misconfigured, unreachable
from embedq.broker.jobs import EmbedResult
from embedq.broker.lanes import Priority
from embedq.broker.rq_private.queues import lane_queues
from embedq.config.settings import ClientSettings, client_settings, redact_url
from embedq.producer.enqueue import SCRIPT_LOAD, EnqueuePlan, plan_submit
from embedq.producer.stats import collect_stats
from embedq.producer.waiting import (
    Outage,
    Send,
    Status,
    Steps,
    out_of_memory,
    raise_first_error,
    result_steps,
    run_steps,
    status_steps,
    submit_steps,
    wait_steps,
)

CONNECT_TIMEOUT = 2.0  # seconds: a Redis that is down fails the call fast instead of hanging it
SOCKET_TIMEOUT = 10.0

T = TypeVar("T")


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
        self.settings = client_settings(redis_url, queue, settings)
        self.connection = connection or sync_redis(
            self.settings, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
        )
        self.lanes = lane_queues(self.settings.queue, self.connection)
        self.limits = self.settings.limits

    def submit(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
        prompt_name: str | None = None,
        priority: Priority = "interactive",
        truncate: bool = True,
    ) -> str:
        """Enqueue one batch of texts; returns its job id."""
        return self.submit_many(
            [texts],
            instruction=instruction,
            normalize=normalize,
            dimensions=dimensions,
            prompt_name=prompt_name,
            priority=priority,
            truncate=truncate,
        )[0]

    def submit_many(
        self,
        batches: Sequence[Sequence[str]],
        instruction: str | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
        prompt_name: str | None = None,
        priority: Priority = "interactive",
        truncate: bool = True,
    ) -> list[str]:
        """Enqueue several batches in one round trip; every batch is checked before any is enqueued.
        `instruction` formats texts as `Instruct: {instruction}\nQuery:{text}`; `prompt_name` picks a
        prompt the model defines (config_sentence_transformers.json, e.g. "query"). `priority`:
        "interactive" (served first) or "bulk" (its own lane and MAX_BULK_QUEUE_LENGTH; workers give
        it a fixed share of passes and serve interactive work between its micro-batches)."""
        plan = self._plan(
            batches,
            instruction=instruction,
            normalize=normalize,
            dimensions=dimensions,
            prompt_name=prompt_name,
            priority=priority,
            truncate=truncate,
        )
        return self._run(submit_steps(plan))

    def _plan(self, batches: Sequence[Sequence[str]], **options: Any) -> EnqueuePlan:
        with self._reachable():  # rq asks Redis its version once
            return plan_submit(self.lanes, self.settings, batches, **options)

    def status(self, job_id: str) -> Status:
        """queued | started | finished | failed | unknown (one round trip)."""
        return self._run(status_steps(job_id))

    def result(self, job_id: str) -> EmbedResult | None:
        """The result if the job is finished, None while it is queued or running; JobFailed if it
        failed, JobNotFound if there is no such job (one round trip)."""
        return self._run(result_steps(job_id))

    def wait(self, job_id: str, timeout: float = 30.0) -> EmbedResult:
        """Block until the job ends (XREAD on rq's result stream, no polling); JobTimeout at the deadline."""
        return self.wait_many([job_id], timeout=timeout)[0]

    def wait_many(self, job_ids: Sequence[str], timeout: float = 30.0) -> list[EmbedResult]:
        """Block until every job ends; results in the order given. Round trips do not grow with the
        number of jobs: each wakes on whichever of them ends. JobFailed names the first failed job."""
        return self._run(wait_steps(job_ids, timeout))

    def embed(self, texts: Sequence[str], timeout: float = 30.0, **options: Any) -> np.ndarray:
        """Submit, wait, and return a float32 array (len(texts), dim) in input order. The submit
        and the first wait go in one round trip. `options`: those of submit."""
        return self.embed_many([texts], timeout=timeout, **options)[0]

    def embed_many(self, batches: Sequence[Sequence[str]], timeout: float = 30.0, **options: Any) -> list[np.ndarray]:
        """Several batches as several jobs, submitted and awaited together: an array per batch, in order."""
        plan = self._plan(batches, **options)
        return [result.embeddings for result in self._run(wait_steps(plan.job_ids, timeout, submit=plan))]

    def stats(self) -> dict[str, Any]:
        """Queue depth, live workers with their providers, counters and timing percentiles."""
        with self._reachable():
            return collect_stats(self.connection, self.settings.queue)

    @contextmanager
    def _reachable(self) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as error:
            raise unreachable(error, self.settings.redis_url) from None

    def _run(self, steps: Steps[T]) -> T:
        return run_steps(steps, self._execute, time.sleep)

    def _execute(self, send: Send) -> Any:
        try:
            replies = self._send(send.commands)
            if any(isinstance(reply, NoScriptError) for reply in replies):  # Redis restarted since: load, again
                replies = self._send([SCRIPT_LOAD, *send.commands])[1:]
        except (RedisConnectionError, RedisTimeoutError) as error:
            if named := misconfigured(error, self.settings.redis_url):
                raise named from None  # not an outage to wait out
            return Outage(error, redact_url(self.settings.redis_url))
        if any(isinstance(reply, OutOfMemoryError) for reply in replies):  # refused at its first write: none ran
            raise out_of_memory(self._memory())
        return raise_first_error(replies)

    def _memory(self) -> dict[str, Any] | None:
        try:
            return self.connection.info("memory")
        except RedisError:  # an ACL without +info, or Redis gone meanwhile: no figures
            return None

    def _send(self, commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        with self.connection.pipeline(transaction=False) as pipe:
            for name, args, kwargs in commands:
                getattr(pipe, name)(*args, **kwargs)
            return list(pipe.execute(raise_on_error=False))

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> EmbedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
