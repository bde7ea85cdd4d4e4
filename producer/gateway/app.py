"""The FastAPI app of `embedq serve`: /v1/embeddings and /v1/models in OpenAI's shape, /health,
/ready and /metrics. Each request is validated, split into jobs of at most MAX_TEXTS_PER_JOB texts,
enqueued on the queue that serves the requested model, and answered when they finish."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedq.producer.errors import InvalidInput, JobFailed, JobTimeout, QueueFull, QueueUnavailable
from embedq.producer.gateway.fleet import Fleet, cancel_queued
from embedq.producer.gateway.metrics import registry
from embedq.producer.gateway.openai_shape import OpenAIError, invalid, parse_request, response
from embedq.producer.gateway.settings import GatewaySettings
from embedq.producer.gateway.status import SAMPLE_EVERY, StatusBoard
from embedq.producer.settings import redact_url

log = logging.getLogger(__name__)
OPEN_PATHS = ("/", "/status.json", "/health", "/ready", "/metrics")
STATUS_PAGE = resources.files("embedq.producer.gateway").joinpath("status.html").read_text(encoding="utf-8")
RETRY_AFTER = "1"


class Gate:
    """What every request passes, as plain ASGI (so a client's disconnect still reaches the endpoint):
    the key check (constant time; `/`, /status.json, /health, /ready and /metrics are open), 413 for a
    body over `limit` bytes (from its Content-Length, or while it streams in, before it is read whole),
    and the count of answers by route and status."""

    def __init__(self, app: ASGIApp, limit: int, keys: list[bytes], requests: Counter) -> None:
        self.app, self.limit, self.keys, self.requests = app, limit, keys, requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in (*OPEN_PATHS, "/v1/embeddings", "/v1/models") else "other"
        status = ["500"]

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            await send(message)

        try:
            headers = dict(scope["headers"])
            if self.keys and path not in OPEN_PATHS:
                given = headers.get(b"authorization", b"").removeprefix(b"Bearer ").strip()
                if not any(hmac.compare_digest(given, key) for key in self.keys):
                    raise OpenAIError(
                        401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key"
                    )
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                raise self.too_large()
            await self.app(scope, self.limited(receive), counted_send)
        except OpenAIError as error:  # refused here, or raised by limited() past FastAPI's handlers
            await JSONResponse(error.body(), status_code=error.status, headers=error.headers)(
                scope, receive, counted_send
            )
        finally:
            self.requests.labels(route, status[0]).inc()

    def too_large(self) -> OpenAIError:
        return OpenAIError(413, f"the request body is over {self.limit} bytes", code="request_too_large")

    def limited(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise self.too_large()
            return message

        return counted


def create_app(settings: GatewaySettings) -> FastAPI:
    connection = AsyncRedis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10)
    sync = Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10)
    fleet = Fleet(settings, connection)
    metrics, requests, abandoned = registry(sync)
    board = StatusBoard(sync)  # redis-py's client is thread-safe: /metrics and the sampler share it

    async def keep_sampling() -> None:
        """The page's chart needs history from before it was opened: sample the fleet all along."""
        while True:
            with suppress(RedisError):
                await asyncio.to_thread(board.sample)
            await asyncio.sleep(SAMPLE_EVERY)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not settings.api_keys:
            log.warning("embedq serve: EMBEDQ_API_KEYS is not set: /v1/ is open to anyone who can reach it")
        log.info("embedq serve: queue directory in Redis at %s", redact_url(settings.redis_url))
        sampler = asyncio.create_task(keep_sampling())
        yield
        sampler.cancel()
        await fleet.aclose()
        sync.close()

    app = FastAPI(title="embedq", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        Gate, limit=settings.http_max_body_bytes, keys=[key.encode() for key in settings.api_keys], requests=requests
    )

    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, error: OpenAIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.get("/", response_class=HTMLResponse)
    async def status_page() -> str:
        return STATUS_PAGE

    @app.get("/status.json")
    async def status_json() -> dict[str, Any]:
        try:
            return await asyncio.to_thread(board.status)
        except RedisError as error:
            raise unavailable(error) from None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        try:
            await connection.ping()
            models = await fleet.models()
        except RedisError as error:
            return JSONResponse({"ready": False, "redis": f"did not answer: {type(error).__name__}"}, status_code=503)
        served = {name: {"queue": m.queue, "live_workers": m.live} for name, m in models.items()}
        return JSONResponse({"ready": True, "redis": "ok", "models": served})

    @app.get("/metrics")
    async def prometheus() -> Response:
        try:
            text = await asyncio.to_thread(generate_latest, metrics)
        except RedisError as error:
            raise OpenAIError(503, f"Redis did not answer: {type(error).__name__}", type="server_error") from None
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        models = await served_models()
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "embedq"} for name in sorted(models)],
        }

    async def served_models() -> dict[str, Any]:
        try:
            return await fleet.models()
        except RedisError as error:
            raise unavailable(error) from None

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            raise invalid("the request body is not valid JSON") from None
        texts, requested, encoding, dimensions = parse_request(body, settings.http_max_inputs)
        models = await served_models()
        name = fleet.resolve(requested)
        model = models.get(name)
        if model is None:
            served = ", ".join(sorted(models)) or "none yet (no worker has started)"
            raise OpenAIError(
                404, f"model {requested!r} is not served here; served: {served}", param="model", code="model_not_found"
            )
        if not model.live:
            raise OpenAIError(
                503,
                f"no live worker serves {name} (queue {model.queue}); retry when workers are back",
                type="server_error",
                code="no_live_workers",
                headers={"Retry-After": "5"},
            )
        if dimensions is not None and dimensions > model.dim:
            raise invalid(f"'dimensions' is {dimensions}, more than {name}'s {model.dim}", "dimensions")
        step = settings.max_texts_per_job
        batches = [texts[start : start + step] for start in range(0, len(texts), step)]
        client = fleet.client(model.queue)
        timeout = settings.http_request_timeout
        job_ids: list[str] = []
        try:
            waiting = asyncio.create_task(
                client.embed_results(
                    batches, timeout=timeout, job_ids=job_ids, dimensions=dimensions, truncate=settings.http_truncate
                )
            )
            while not await until_done(waiting, 0.25):
                if await request.is_disconnected():  # nobody will read the answer: free the workers
                    waiting.cancel()
                    cancelled = await asyncio.to_thread(cancel_queued, sync, job_ids)
                    abandoned.inc(cancelled)
                    raise OpenAIError(499, "the client went away", type="client_closed_request")
            results = waiting.result()
        except InvalidInput as error:
            raise invalid(str(error), "input") from None
        except QueueFull as error:
            raise OpenAIError(
                429, str(error), type="rate_limit_error", code="queue_full", headers={"Retry-After": RETRY_AFTER}
            ) from None
        except QueueUnavailable as error:
            raise unavailable(error) from None
        except JobTimeout:
            raise OpenAIError(
                504, f"the jobs did not finish within {timeout:g} s", type="server_error", code="timeout"
            ) from None
        except JobFailed as error:
            raise failed(error, job_ids, step) from None
        return JSONResponse(response(results, name, encoding))  # plain floats and str: no encoder walk

    return app


async def until_done(task: asyncio.Task[Any], seconds: float) -> bool:
    """Wait up to `seconds` for `task`; whether it is done (its exception, if any, is raised by .result())."""
    await asyncio.wait([task], timeout=seconds)
    return task.done()


def failed(error: JobFailed, job_ids: list[str], step: int) -> OpenAIError:
    """A text the worker refused (over the model's length with truncation off) is a 400 naming its
    index in the request; anything else a worker could not do is a 500."""
    refused = re.search(r"texts\[(\d+)\] has more than the model's maximum of (\d+) tokens", error.reason)
    if refused and error.job_id in job_ids:
        index = job_ids.index(error.job_id) * step + int(refused.group(1))
        return invalid(
            f"input[{index}] is longer than the model's maximum of {refused.group(2)} tokens and "
            "EMBEDQ_HTTP_TRUNCATE=false",
            "input",
            "input_too_long",
        )
    return OpenAIError(500, f"a worker could not embed the input: {error.reason}", type="server_error")


def unavailable(error: Exception) -> OpenAIError:
    return OpenAIError(
        503,
        f"Redis did not answer ({type(error).__name__})",
        type="server_error",
        code="queue_unavailable",
        headers={"Retry-After": RETRY_AFTER},
    )
