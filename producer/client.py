"""EmbedClient: what a web app uses to enqueue texts and collect their vectors. A thin driver: every
call is a set of I/O-free steps (waiting.py, enqueue.py) run over redis-py, one pipeline per step."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar, Unpack

import numpy as np
from redis import Redis
from redis.exceptions import RedisError

from embedq.broker.connection import sync_cache_redis, sync_redis
from embedq.broker.direct import execute, stack_of
from embedq.broker.failures import OUTAGES, unreachable
from embedq.broker.jobs import EmbedResult
from embedq.broker.rq_private.queues import shard_lanes
from embedq.broker.shards import shards_of
from embedq.config.settings import ClientSettings, client_settings, redact_url
from embedq.producer.enqueue import EnqueuePlan, SubmitOptions, plan_submit
from embedq.producer.remote_cache import RemoteCache
from embedq.producer.stats import collect_stats
from embedq.producer.steps import Finished, Outage, Pause, Send, Steps, advance, interpreted
from embedq.producer.waiting import Status, result_steps, status_steps, submit_steps, wait_steps, waits_by_shard

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
        cache_scope: str = "",
    ):
        """`cache_scope`: cached vectors are shared only between clients of one scope (default: every client
        of this Redis and queue); pass `cache=False` to a call to bypass the cache."""
        self.settings = client_settings(redis_url, queue, settings)
        self.cache_scope = cache_scope
        self.connection = connection or sync_redis(
            self.settings, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
        )
        self.cache_connection = sync_cache_redis(self.settings)
        self.remote = RemoteCache.of(self.settings) if self.cache_connection else None
        self.shards = shard_lanes(shards_of(self.settings), self.connection)  # each shard's name and lanes
        self.limits = self.settings.limits

    def submit(self, texts: Sequence[str], **options: Unpack[SubmitOptions]) -> str:
        """Enqueue one batch of texts; its job id (one round trip). `options`: SubmitOptions."""
        return self.submit_many([texts], **options)[0]

    def submit_many(self, batches: Sequence[Sequence[str]], **options: Unpack[SubmitOptions]) -> list[str]:
        """Enqueue several batches in one round trip, all or nothing; every batch is checked before any
        is enqueued (InvalidInput; QueueFull: none enqueued)."""
        return self._run(submit_steps(self._plan(batches, options), self.remote))

    def status(self, job_id: str) -> Status:
        """queued | started | finished | failed | unknown (one round trip)."""
        return self._run(status_steps(job_id))

    def result(self, job_id: str) -> EmbedResult | None:
        """The result if the job is finished, None while it is queued or running; JobFailed if it
        failed, JobNotFound if there is no such job (one round trip)."""
        return self._run(result_steps(job_id, self.settings.redis_cluster))

    def wait(self, job_id: str, timeout: float = 30.0) -> EmbedResult:
        """Block until the job ends (XREAD on rq's result stream, no polling); JobTimeout at the deadline."""
        return self.wait_many([job_id], timeout=timeout)[0]

    def wait_many(self, job_ids: Sequence[str], timeout: float = 30.0) -> list[EmbedResult]:
        """Block until every job ends; results in the order given. Round trips do not grow with the
        number of jobs: each wakes on whichever of them ends. JobFailed names the first failed job."""
        return self._run(waits_by_shard(job_ids, timeout, self.settings.redis_cluster))

    def embed(self, texts: Sequence[str], timeout: float = 30.0, **options: Unpack[SubmitOptions]) -> np.ndarray:
        """Submit, wait, and return a float32 array (len(texts), dim) in input order. The submit
        and the first wait go in one round trip."""
        return self.embed_many([texts], timeout=timeout, **options)[0]

    def embed_many(
        self, batches: Sequence[Sequence[str]], timeout: float = 30.0, **options: Unpack[SubmitOptions]
    ) -> list[np.ndarray]:
        """Several batches as several jobs, submitted and awaited together: an array per batch, in order."""
        plan = self._plan(batches, options)
        steps = wait_steps(plan.job_ids, timeout, submit=plan, remote=self.remote)
        return [result.embeddings for result in self._run(steps)]

    def stats(self) -> dict[str, Any]:
        """Queue depth, live workers with their providers, counters and timing percentiles."""
        try:
            return collect_stats(self.connection, self.settings.queue, self.cache_connection, list(self.shards))
        except OUTAGES as error:
            raise unreachable(error, self.settings.redis_url) from None

    def _plan(self, batches: Sequence[Sequence[str]], options: SubmitOptions) -> EnqueuePlan:
        return plan_submit(self.shards, self.settings, batches, options, self.cache_scope)

    def _run(self, steps: Steps[T]) -> T:
        steps, reply = interpreted(steps, self.settings.redis_url), None
        while not isinstance(step := advance(steps, reply), Finished):
            if isinstance(step, Pause):
                time.sleep(step.seconds)
                reply = None
            else:
                reply = self._send(step)
        return step.value

    def _send(self, send: Send) -> list[Any] | Outage:
        if send.to == "cache" and self.cache_connection is not None:  # any trouble there is a miss
            try:
                return execute(self.cache_connection, stack_of(self.cache_connection, send.commands))
            except (RedisError, OSError) as error:
                return Outage(error, redact_url(self.settings.cache_url))
        try:
            return execute(self.connection, stack_of(self.connection, send.commands))
        except OUTAGES as error:
            return Outage(error, redact_url(self.settings.redis_url))

    def close(self) -> None:
        self.connection.close()
        if self.cache_connection is not None:
            self.cache_connection.close()

    def __enter__(self) -> EmbedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
