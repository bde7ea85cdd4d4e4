"""AsyncEmbedClient: EmbedClient's methods as coroutines on redis.asyncio, for FastAPI, Starlette and
aiohttp apps (rq itself has no asyncio API). The same steps as the sync client (waiting.py,
enqueue.py), driven over redis.asyncio: only the I/O differs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, Unpack

import numpy as np
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from embedq.broker.connection import async_cache_redis, async_redis, sync_cache_redis, sync_redis
from embedq.broker.direct import aclose, execute_async, stack_of
from embedq.broker.failures import OUTAGES, unreachable
from embedq.broker.jobs import EmbedResult
from embedq.broker.rq_private.queues import job_builders
from embedq.broker.shards import shards_of
from embedq.config.settings import ClientSettings, client_settings, redact_url
from embedq.producer.client import CONNECT_TIMEOUT, SOCKET_TIMEOUT
from embedq.producer.enqueue import EnqueuePlan, SubmitOptions, plan_submit
from embedq.producer.remote_cache import RemoteCache
from embedq.producer.stats import collect_stats
from embedq.producer.steps import Finished, Outage, Pause, Send, Steps, advance, interpreted
from embedq.producer.waiting import Status, result_steps, status_steps, submit_steps, wait_steps, waits_by_shard

T = TypeVar("T")


class AsyncEmbedClient:
    """Validate → enqueue → status / result / wait, awaited, against one Redis and one queue."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        queue: str | None = None,
        settings: ClientSettings | None = None,
        connection: AsyncRedis | None = None,
        cache_scope: str = "",
    ):
        """`cache_scope`: cached vectors are shared only between clients of one scope (default: every client
        of this Redis and queue); pass `cache=False` to a call to bypass the cache."""
        self.settings = client_settings(redis_url, queue, settings)
        self.cache_scope = cache_scope
        self.connection = connection or async_redis(
            self.settings, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
        )
        self.cache_connection = async_cache_redis(self.settings)
        self.remote = RemoteCache.of(self.settings) if self.cache_connection else None
        self._shards = job_builders(shards_of(self.settings))
        self._stats_connection: Redis | None = None  # stats() reads with redis-py, in a thread: made when asked
        self._stats_cache_connection: Redis | None = None  # and the cache's own Redis (CACHE_URL) likewise
        self.limits = self.settings.limits

    async def submit(self, texts: Sequence[str], **options: Unpack[SubmitOptions]) -> str:
        """Enqueue one batch of texts; its job id (one round trip)."""
        return (await self.submit_many([texts], **options))[0]

    async def submit_many(self, batches: Sequence[Sequence[str]], **options: Unpack[SubmitOptions]) -> list[str]:
        """Enqueue several batches in one round trip, all or nothing (QueueFull: none enqueued)."""
        return await self._run(submit_steps(self._plan(batches, options), self.remote))

    async def status(self, job_id: str) -> Status:
        return await self._run(status_steps(job_id))

    async def result(self, job_id: str) -> EmbedResult | None:
        return await self._run(result_steps(job_id, self.settings.redis_cluster))

    async def wait(self, job_id: str, timeout: float = 30.0) -> EmbedResult:
        return (await self.wait_many([job_id], timeout=timeout))[0]

    async def wait_many(self, job_ids: Sequence[str], timeout: float = 30.0) -> list[EmbedResult]:
        return await self._run(waits_by_shard(job_ids, timeout, self.settings.redis_cluster))

    async def embed_results(
        self,
        batches: Sequence[Sequence[str]],
        timeout: float = 30.0,
        *,
        job_ids: list[str] | None = None,
        planned: Callable[[list[str]], Awaitable[None]] | None = None,
        **options: Unpack[SubmitOptions],
    ) -> list[EmbedResult]:
        """Submit several batches and wait for all of them: one round trip to submit and start waiting.
        `job_ids`, when given, receives the jobs' ids before the wait (to cancel them if the caller leaves);
        `planned` is awaited with them before they are sent (to note them where others can find them)."""
        plan = self._plan(batches, options)
        if job_ids is not None:
            job_ids.extend(plan.job_ids)
        if planned is not None:
            await planned(plan.job_ids)
        return await self._run(wait_steps(plan.job_ids, timeout, submit=plan, remote=self.remote))

    async def embed(self, texts: Sequence[str], timeout: float = 30.0, **options: Unpack[SubmitOptions]) -> np.ndarray:
        return (await self.embed_many([texts], timeout=timeout, **options))[0]

    async def embed_many(
        self, batches: Sequence[Sequence[str]], timeout: float = 30.0, **options: Unpack[SubmitOptions]
    ) -> list[np.ndarray]:
        return [result.embeddings for result in await self.embed_results(batches, timeout, **options)]

    async def stats(self) -> dict[str, Any]:
        """As EmbedClient.stats (read in a thread: it walks the workers' facts)."""
        if self._stats_connection is None:
            self._stats_connection = sync_redis(self.settings, socket_connect_timeout=CONNECT_TIMEOUT)
            self._stats_cache_connection = sync_cache_redis(self.settings)
        try:
            return await asyncio.to_thread(
                collect_stats,
                self._stats_connection,
                self.settings.queue,
                self._stats_cache_connection,
                list(self._shards),
            )
        except OUTAGES as error:
            raise unreachable(error, self.settings.redis_url) from None

    def _plan(self, batches: Sequence[Sequence[str]], options: SubmitOptions) -> EnqueuePlan:
        return plan_submit(self._shards, self.settings, batches, options, self.cache_scope)

    async def _run(self, steps: Steps[T]) -> T:
        steps, reply = interpreted(steps, self.settings.redis_url), None
        while not isinstance(step := advance(steps, reply), Finished):
            reply = await (asyncio.sleep(step.seconds) if isinstance(step, Pause) else self._send(step))
        return step.value

    async def _send(self, send: Send) -> list[Any] | Outage:
        if send.to == "cache" and self.cache_connection is not None:  # any trouble there is a miss
            try:
                return await execute_async(self.cache_connection, stack_of(self.cache_connection, send.commands))
            except (RedisError, OSError) as error:
                return Outage(error, redact_url(self.settings.cache_url))
        try:
            return await execute_async(self.connection, stack_of(self.connection, send.commands))
        except OUTAGES as error:
            return Outage(error, redact_url(self.settings.redis_url))

    async def aclose(self) -> None:
        await aclose(self.connection)
        if self.cache_connection is not None:
            await aclose(self.cache_connection)
        if self._stats_connection is not None:
            self._stats_connection.close()
        if self._stats_cache_connection is not None:
            self._stats_cache_connection.close()

    async def __aenter__(self) -> AsyncEmbedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
