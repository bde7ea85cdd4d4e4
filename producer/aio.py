"""AsyncEmbedClient: EmbedClient's methods as coroutines on redis.asyncio, for FastAPI, Starlette and
aiohttp apps (rq itself has no asyncio API). It shares everything but the I/O with the sync client:
the jobs rq would enqueue (producer/enqueue.py) and the meaning of every reply (producer/waiting.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, OutOfMemoryError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from embedq.broker.connection import async_redis, sync_redis
from embedq.broker.failures import misconfigured, unreachable
from embedq.broker.jobs import EmbedResult
from embedq.broker.lanes import Priority
from embedq.broker.rq_private.queues import lane_queues
from embedq.broker.rq_private.records import knows_server_version, set_server_version
from embedq.config.settings import ClientSettings, client_settings, redact_url
from embedq.producer.client import CONNECT_TIMEOUT, SOCKET_TIMEOUT
from embedq.producer.enqueue import SCRIPT_LOAD, EnqueuePlan, plan_submit
from embedq.producer.stats import collect_stats
from embedq.producer.waiting import (
    Outage,
    Pause,
    Send,
    Status,
    Steps,
    out_of_memory,
    raise_first_error,
    result_steps,
    status_steps,
    submit_steps,
    wait_steps,
)

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
    ):
        self.settings = client_settings(redis_url, queue, settings)
        self.connection = connection or async_redis(
            self.settings, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=SOCKET_TIMEOUT
        )
        # rq builds the jobs exactly as its own enqueue would; this client never sends through it
        # (only stats(), in a thread, reads with it).
        self._sync = sync_redis(self.settings, socket_connect_timeout=CONNECT_TIMEOUT)
        self._lanes = lane_queues(self.settings.queue, self._sync)
        self.limits = self.settings.limits

    async def submit(
        self,
        texts: Sequence[str],
        instruction: str | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
        prompt_name: str | None = None,
        priority: Priority = "interactive",
        truncate: bool = True,
    ) -> str:
        """Enqueue one batch of texts; its job id (one round trip)."""
        job_ids = await self.submit_many(
            [texts],
            instruction=instruction,
            normalize=normalize,
            dimensions=dimensions,
            prompt_name=prompt_name,
            priority=priority,
            truncate=truncate,
        )
        return job_ids[0]

    async def submit_many(
        self,
        batches: Sequence[Sequence[str]],
        instruction: str | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
        prompt_name: str | None = None,
        priority: Priority = "interactive",
        truncate: bool = True,
    ) -> list[str]:
        """Enqueue several batches in one round trip, all or nothing (QueueFull: none enqueued)."""
        plan = await self._plan(
            batches,
            instruction=instruction,
            normalize=normalize,
            dimensions=dimensions,
            prompt_name=prompt_name,
            priority=priority,
            truncate=truncate,
        )
        return await self._run(submit_steps(plan))

    async def _plan(self, batches: Sequence[Sequence[str]], **options: Any) -> EnqueuePlan:
        """As EmbedClient's; rq's Queue here never talks to Redis: the server version it wants is asked here."""
        if not all(knows_server_version(queue) for queue in self._lanes.values()):
            try:
                version = (await self.connection.info("server"))["redis_version"]
            except (RedisConnectionError, RedisTimeoutError) as error:
                raise unreachable(error, self.settings.redis_url) from None
            for queue in self._lanes.values():
                set_server_version(queue, version)
        return plan_submit(self._lanes, self.settings, batches, **options)

    async def status(self, job_id: str) -> Status:
        return await self._run(status_steps(job_id))

    async def result(self, job_id: str) -> EmbedResult | None:
        return await self._run(result_steps(job_id))

    async def wait(self, job_id: str, timeout: float = 30.0) -> EmbedResult:
        return (await self.wait_many([job_id], timeout=timeout))[0]

    async def wait_many(self, job_ids: Sequence[str], timeout: float = 30.0) -> list[EmbedResult]:
        return await self._run(wait_steps(job_ids, timeout))

    async def embed_results(
        self,
        batches: Sequence[Sequence[str]],
        timeout: float = 30.0,
        *,
        job_ids: list[str] | None = None,
        planned: Callable[[list[str]], Awaitable[None]] | None = None,
        **options: Any,
    ) -> list[EmbedResult]:
        """Submit several batches and wait for all of them: one round trip to submit and start waiting.
        `job_ids`, when given, receives the jobs' ids before the wait (to cancel them if the caller leaves);
        `planned` is awaited with them before they are sent (to note them where others can find them)."""
        plan = await self._plan(batches, **options)
        if job_ids is not None:
            job_ids.extend(plan.job_ids)
        if planned is not None:
            await planned(plan.job_ids)
        return await self._run(wait_steps(plan.job_ids, timeout, submit=plan))

    async def embed(self, texts: Sequence[str], timeout: float = 30.0, **options: Any) -> np.ndarray:
        return (await self.embed_many([texts], timeout=timeout, **options))[0]

    async def embed_many(
        self, batches: Sequence[Sequence[str]], timeout: float = 30.0, **options: Any
    ) -> list[np.ndarray]:
        return [result.embeddings for result in await self.embed_results(batches, timeout, **options)]

    async def stats(self) -> dict[str, Any]:
        """As EmbedClient.stats (read in a thread: it walks the workers' facts)."""
        try:
            return await asyncio.to_thread(collect_stats, self._sync, self.settings.queue)
        except (RedisConnectionError, RedisTimeoutError) as error:
            raise unreachable(error, self.settings.redis_url) from None

    async def _run(self, steps: Steps[T]) -> T:
        reply: Any = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
                reply = None
            else:
                reply = await self._execute(step)

    async def _execute(self, send: Send) -> Any:
        try:
            replies = await self._send(send.commands)
            if any(isinstance(reply, NoScriptError) for reply in replies):  # Redis restarted since: load, again
                replies = (await self._send([SCRIPT_LOAD, *send.commands]))[1:]
        except (RedisConnectionError, RedisTimeoutError) as error:
            if named := misconfigured(error, self.settings.redis_url):
                raise named from None  # not an outage to wait out
            return Outage(error, redact_url(self.settings.redis_url))
        if any(isinstance(reply, OutOfMemoryError) for reply in replies):  # refused at its first write: none ran
            raise out_of_memory(await self._memory())
        return raise_first_error(replies)

    async def _memory(self) -> dict[str, Any] | None:
        try:
            return await self.connection.info("memory")
        except RedisError:  # an ACL without +info, or Redis gone meanwhile: no figures
            return None

    async def _send(self, commands: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
        async with self.connection.pipeline(transaction=False) as pipe:
            for name, args, kwargs in commands:
                getattr(pipe, name)(*args, **kwargs)
            return list(await pipe.execute(raise_on_error=False))

    async def aclose(self) -> None:
        await self.connection.aclose()
        self._sync.close()

    async def __aenter__(self) -> AsyncEmbedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
