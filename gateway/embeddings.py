"""POST /v1/embeddings, the gateway's hot path, as plain ASGI (FastAPI's request, routing and response
machinery cost more CPU per request than the rest of the path: bench/gateway.py). A body is parsed,
split into jobs of at most MAX_TEXTS_PER_JOB texts, enqueued on the queue that serves the requested
model, and answered when they finish; if the client goes away first, its jobs are cancelled, running
ones too (their workers drop them at the next micro-batch)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson
from prometheus_client import Counter
from redis import Redis
from redis.exceptions import RedisError
from starlette.types import Receive, Send

from embedq.broker.cache import CacheUse
from embedq.broker.jobs import EmbedResult
from embedq.broker.rq_private.records import cancel_jobs
from embedq.config.settings import GatewaySettings
from embedq.errors import (
    InvalidInput,
    InvalidSettings,
    JobFailed,
    JobTimeout,
    NotCached,
    QueueFull,
    QueueUnavailable,
)
from embedq.gateway.fleet import Fleet, ServedModel
from embedq.gateway.openai_shape import (
    RETRY_AFTER,
    OpenAIError,
    invalid,
    parse_request,
    refused,
    response,
    send_json,
    shown,
    unavailable,
)


class EmbeddingsEndpoint:
    def __init__(self, settings: GatewaySettings, fleet: Fleet, sync: Redis, abandoned: Counter) -> None:
        self.settings, self.fleet, self.sync, self.abandoned = settings, fleet, sync, abandoned

    async def __call__(
        self, body: bytes, receive: Receive, send: Send, headers: list[tuple[bytes, bytes]], owner: str
    ) -> None:
        """Answer one request whose whole `body` has been read; `receive` then reports only a disconnect.
        `headers`: the request's (its Cache-Control); `owner`: the hash of its API key ("" without keys)."""
        cache = cache_use(headers, owner, self.settings)
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise invalid("the request body is not valid JSON") from None
        texts, requested, encoding, dimensions = parse_request(request, self.settings.http_max_inputs)
        model = await self.served(requested, dimensions)
        results = await self.embed(model, texts, dimensions, receive, replace(cache, only=not model.live))
        await send_json(send, 200, response(results, model.name, encoding))

    async def served(self, requested: str, dimensions: int | None) -> ServedModel:
        """The model a request names: 404 if no worker ever served it. With no live worker, only the cache
        answers it (a 503 if it cannot: embed)."""
        try:
            models = await self.fleet.models()
        except RedisError as error:
            raise unavailable(error) from None
        name = self.fleet.resolve(requested)
        model = models.get(name)
        if model is None:
            served = ", ".join(sorted(models)) or "none yet (no worker has started)"
            message = f"model {shown(requested)} is not served here; served: {served}"
            raise OpenAIError(404, message, param="model", code="model_not_found")
        if dimensions is not None and dimensions > model.dim:
            raise invalid(f"'dimensions' is {dimensions}, more than {name}'s {model.dim}", "dimensions")
        return model

    async def embed(
        self, model: ServedModel, texts: list[str], dimensions: int | None, receive: Receive, cache: CacheUse
    ) -> list[EmbedResult]:
        step = self.settings.max_texts_per_job
        batches = [texts[start : start + step] for start in range(0, len(texts), step)]
        timeout = self.settings.http_request_timeout
        job_ids: list[str] = []
        work = asyncio.ensure_future(
            self.fleet.client(model).embed_results(
                batches,
                timeout=timeout,
                job_ids=job_ids,
                dimensions=dimensions,
                truncate=self.settings.http_truncate,
                cache=cache,
            )
        )
        gone = asyncio.ensure_future(disconnected(receive))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():  # nobody will read the answer: free the workers
            work.cancel()
            self.abandoned.inc(await asyncio.to_thread(cancel_jobs, self.sync, job_ids, started=True))
            raise OpenAIError(499, "the client went away", type="client_closed_request")
        try:
            return work.result()
        except InvalidInput as error:
            raise invalid(str(error), "input") from None
        except NotCached:
            raise OpenAIError(
                503,
                f"no live worker serves {model.name} (queue {model.queue}) and the cache holds not all of the input; "
                "retry when workers are back",
                type="server_error",
                code="no_live_workers",
                headers={"Retry-After": "5"},
            ) from None
        except QueueFull as error:
            raise OpenAIError(
                429, str(error), type="rate_limit_error", code="queue_full", headers={"Retry-After": RETRY_AFTER}
            ) from None
        except QueueUnavailable as error:
            raise unavailable(error) from None
        except InvalidSettings as error:  # Redis refused this gateway's credentials or TLS: its operator's to fix
            raise OpenAIError(503, f"the gateway cannot use Redis: {error}", type="server_error") from None
        except JobTimeout:
            raise OpenAIError(
                504, f"the jobs did not finish within {timeout:g} s", type="server_error", code="timeout"
            ) from None
        except JobFailed as error:
            raise failed(error, job_ids, step) from None


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone (after its body, ASGI's receive() has nothing else to say)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def failed(error: JobFailed, job_ids: list[str], step: int) -> OpenAIError:
    """A text the worker refused (over the model's length with truncation off) is a 400 naming its
    index in the request (jobs of `step` texts); anything else a worker could not do is a 500."""
    if error.refusal is not None and error.job_id in job_ids:
        return refused(error.refusal, job_ids.index(error.job_id) * step + error.refusal.index)
    return OpenAIError(500, f"a worker could not embed the input: {error.reason}", type="server_error")


def cache_use(headers: list[tuple[bytes, bytes]], owner: str, settings: GatewaySettings) -> CacheUse:
    """What a request's `Cache-Control` asks (`no-cache`: do not read, `no-store`: do not write; HTTP's own
    request directives, which OpenAI's SDKs send through `extra_headers`), in the caller's scope: its API
    key's (`owner`, a hash of the key) under CACHE_SCOPE=key, one for all under CACHE_SCOPE=shared."""
    directives = {
        part.strip().split(b"=")[0].lower()
        for name, value in headers
        if name == b"cache-control"
        for part in value.split(b",")
    }
    scope = owner if settings.cache_scope == "key" else ""
    return CacheUse(read=b"no-cache" not in directives, write=b"no-store" not in directives, scope=scope)
