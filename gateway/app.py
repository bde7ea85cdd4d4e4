"""The ASGI app of `embedq serve`: /v1/embeddings (gateway/embeddings.py), /v1/models and
the Batch API (batch_api.py, run by batch_driver.py) in OpenAI's shape, /health, /ready, /metrics and
the status page, behind one gate for keys, body size and request counts."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedq.broker.connection import async_redis, sync_redis
from embedq.broker.eviction import enforce, eviction_risk
from embedq.broker.keys import BatchKeys
from embedq.config.settings import GatewaySettings, redact_url
from embedq.gateway.batch.api import OWNER, batch_api, owner_of
from embedq.gateway.batch.batches import Batches
from embedq.gateway.batch.driver import BatchDriver
from embedq.gateway.batch.files import DirectoryStore, Files
from embedq.gateway.embeddings import EmbeddingsEndpoint
from embedq.gateway.fleet import Fleet
from embedq.gateway.metrics import registry
from embedq.gateway.openai_shape import OpenAIError, invalid, send_json, unavailable
from embedq.gateway.status import SAMPLE_EVERY, StatusBoard

log = logging.getLogger(__name__)
OPEN_PATHS = ("/", "/status.json", "/health", "/ready", "/metrics")
EMBEDDINGS = "/v1/embeddings"
FILES = "/v1/files"
JSON_BODIES = (EMBEDDINGS, "/v1/batches")  # POSTed as JSON only (415 otherwise); /v1/files takes multipart
MULTIPART_SLACK = 64 * 1024  # an upload's body: the file plus multipart's headers and boundaries
STATUS_PAGE = resources.files("embedq.gateway").joinpath("status.html").read_text(encoding="utf-8")


class Gate:
    """The gateway as uvicorn sees it, plain ASGI in front of the FastAPI app: the key check (constant
    time; `/`, /status.json, /health, /ready and /metrics are open), 413 for a body over `limit` bytes
    (from its Content-Length, or while it streams in, before it is read whole), the count of answers by
    route and status, and POST /v1/embeddings, answered by `embeddings` without FastAPI's machinery.
    Uploads to /v1/files may be as large as `files_limit`; the key's hash goes in the scope (OWNER)."""

    def __init__(
        self,
        app: ASGIApp,
        embeddings: EmbeddingsEndpoint,
        limits: tuple[int, int],
        keys: list[bytes],
        requests: Counter,
    ) -> None:
        self.app, self.embeddings, self.keys, self.requests = app, embeddings, keys, requests
        self.body_limit, self.files_limit = limits
        self.owners = {key: owner_of(key) for key in keys}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in (*OPEN_PATHS, EMBEDDINGS, "/v1/models") else api_route(path)
        limit = self.files_limit if path == FILES else self.body_limit
        status = [""]

        head = scope["method"] == "HEAD"  # answered as GET is, without the body (HTTP's HEAD)
        if head:
            scope = {**scope, "method": "GET"}

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            headers = scope["headers"]
            if self.keys and path not in OPEN_PATHS:
                scope[OWNER] = self.owner(headers)
            declared = header(headers, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise too_large(limit)
            if scope["method"] == "POST" and path in JSON_BODIES:
                media_type = (header(headers, b"content-type") or b"").split(b";")[0].strip().lower()
                if media_type != b"application/json":
                    raise OpenAIError(
                        415,
                        f"{path} takes a JSON body: send Content-Type: application/json",
                        code="unsupported_media_type",
                    )
            if path != EMBEDDINGS:
                await self.app(scope, self.limited(receive, limit), counted_send)
            elif scope["method"] != "POST":
                raise OpenAIError(405, f"{EMBEDDINGS} takes POST", code="method_not_allowed")
            else:
                body = await self.read_body(receive)
                await self.embeddings(body, receive, counted_send, headers, str(scope.get(OWNER, "")))
        except OpenAIError as error:  # refused here, by the endpoint, or by limited() past FastAPI's handlers
            await send_json(counted_send, error.status, error.body(), error.headers)
        except Exception:
            if status[0]:  # FastAPI answered 500 already: let uvicorn log it
                raise
            log.exception("embedq serve: %s failed", route)
            await send_json(counted_send, 500, OpenAIError(500, "internal error", type="server_error").body())
        finally:
            self.requests.labels(route, status[0] or "500").inc()

    def owner(self, headers: list[tuple[bytes, bytes]]) -> str:
        """The hash of the caller's key: exactly one `Authorization: Bearer KEY` naming a known key, else 401."""
        given = [value for name, value in headers if name == b"authorization"]
        scheme, _, key = given[0].partition(b" ") if len(given) == 1 else (b"", b"", b"")
        matched = [known for known in self.keys if hmac.compare_digest(key.strip(), known)]
        if scheme.lower() != b"bearer" or not matched:
            raise OpenAIError(401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key")
        return self.owners[matched[0]]

    async def read_body(self, receive: Receive) -> bytes:
        limited, chunks = self.limited(receive, self.body_limit), []
        while True:
            message = await limited()  # 413 once the body passes the limit
            if message["type"] == "http.disconnect":
                raise OpenAIError(499, "the client went away", type="client_closed_request")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                return b"".join(chunks)

    @staticmethod
    def limited(receive: Receive, limit: int) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit)
            return message

        return counted


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of a (lower-case) header, or None."""
    return next((value for key, value in headers if key == name), None)


def too_large(limit: int) -> OpenAIError:
    return OpenAIError(413, f"the request body is over {limit} bytes", code="request_too_large")


def api_route(path: str) -> str:
    """The label of a Batch API path in the request counts (ids left out)."""
    for prefix in ("/v1/files", "/v1/batches"):
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return "other"


@dataclass
class Parts:
    """What the gateway's routes share: its Redis clients and the objects built on them."""

    connection: AsyncRedis
    sync: Redis  # redis-py's client is thread-safe: /metrics, the status sampler and cancels share it
    fleet: Fleet
    metrics: CollectorRegistry
    requests: Counter
    abandoned: Counter
    board: StatusBoard
    files: Files
    batches: Batches
    driver: BatchDriver

    @classmethod
    def build(cls, settings: GatewaySettings) -> Parts:
        connection = async_redis(settings, socket_connect_timeout=2, socket_timeout=10)
        sync = sync_redis(settings, socket_connect_timeout=2, socket_timeout=10)
        fleet = Fleet(settings, connection)
        metrics, requests, abandoned = registry(sync, settings.redis_cluster)
        retention = settings.files_retention.total_seconds()
        batch_keys = BatchKeys.of(settings.redis_cluster)
        files = Files(connection, DirectoryStore(settings.files_dir), retention, settings.files_quota_bytes, batch_keys)
        batches = Batches(connection, retention, batch_keys)
        driver = BatchDriver(settings, fleet, sync, files, batches)
        board = StatusBoard(sync, settings.redis_cluster)
        return cls(connection, sync, fleet, metrics, requests, abandoned, board, files, batches, driver)


def create_app(settings: GatewaySettings) -> Gate:
    """The FastAPI app (every route but the hot path) behind the Gate (keys, body limits, /v1/embeddings)."""
    parts = Parts.build(settings)
    app = FastAPI(title="embedq", lifespan=lifespan(settings, parts), docs_url=None, redoc_url=None, openapi_url=None)
    answer_errors_in_openai_shape(app)
    app.include_router(batch_api(settings, parts.files, parts.batches, parts.driver.wake))
    app.include_router(fleet_routes(settings, parts))
    embeddings = EmbeddingsEndpoint(settings, parts.fleet, parts.sync, parts.abandoned)
    keys = [key.encode() for key in settings.api_keys]
    limits = (settings.http_max_body_bytes, settings.files_max_bytes + MULTIPART_SLACK)
    return Gate(app, embeddings, limits, keys, parts.requests)


def lifespan(settings: GatewaySettings, parts: Parts) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up warnings, the status sampler and the batch driver while the app runs; then close everything."""

    async def keep_sampling() -> None:
        """The page's chart needs history from before it was opened: sample the fleet all along."""
        while True:
            with suppress(RedisError):
                await asyncio.to_thread(parts.board.sample)
            await asyncio.sleep(SAMPLE_EVERY)

    @asynccontextmanager
    async def running(_: FastAPI) -> AsyncIterator[None]:
        if not settings.api_keys:
            log.warning("embedq serve: EMBEDQ_API_KEYS is not set: /v1/ is open to anyone who can reach it")
        log.info("embedq serve: queue directory in Redis at %s", redact_url(settings.redis_url))
        with suppress(RedisError):  # Redis away at start-up: /ready says so
            enforce(await asyncio.to_thread(eviction_risk, parts.sync), False, "embedq serve")
        sampler = asyncio.create_task(keep_sampling())
        driving = asyncio.create_task(parts.driver.run())
        yield
        sampler.cancel()
        driving.cancel()
        await parts.driver.aclose()
        await parts.fleet.aclose()
        parts.sync.close()

    return running


def answer_errors_in_openai_shape(app: FastAPI) -> None:
    """Every error the app answers, in OpenAI's shape: its own, Redis', Starlette's and FastAPI's."""

    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, error: OpenAIError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(RedisError)
    async def redis_error(request: Request, error: RedisError) -> JSONResponse:
        return await openai_error(request, unavailable(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        """An unknown path, a wrong method, a malformed upload: OpenAI's error shape, as everywhere."""
        return await openai_error(
            request, OpenAIError(error.status_code, str(error.detail), headers=dict(error.headers or {}))
        )

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"][1:])
        return await openai_error(request, invalid(f"{where}: {problem['msg']}", where or None))


def fleet_routes(settings: GatewaySettings, parts: Parts) -> APIRouter:
    """The open routes (status page, health, readiness, metrics) and /v1/models."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    async def status_page() -> str:
        return STATUS_PAGE

    @router.get("/status.json")
    async def status_json() -> dict[str, Any]:
        try:
            return await asyncio.to_thread(parts.board.status)
        except RedisError as error:
            raise unavailable(error) from None

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    async def ready() -> JSONResponse:
        try:
            await parts.connection.ping()
            models = await parts.fleet.models()
            risk = await asyncio.to_thread(eviction_risk, parts.sync)
        except RedisError as error:
            return JSONResponse({"ready": False, "redis": f"did not answer: {type(error).__name__}"}, status_code=503)
        served = {name: {"queue": m.queue, "live_workers": m.live} for name, m in models.items()}
        body: dict[str, Any] = {"ready": True, "redis": "ok", "models": served}
        if risk and settings.require_noeviction:
            return JSONResponse({**body, "ready": False, "redis": f"{risk} (EMBEDQ_REQUIRE_NOEVICTION=true)"}, 503)
        return JSONResponse({**body, "warning": risk} if risk else body)

    @router.get("/metrics")
    async def prometheus() -> Response:
        try:
            text = await asyncio.to_thread(generate_latest, parts.metrics)
        except RedisError as error:
            raise OpenAIError(503, f"Redis did not answer: {type(error).__name__}", type="server_error") from None
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        try:
            models = await parts.fleet.models()
        except RedisError as error:
            raise unavailable(error) from None
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "embedq"} for name in sorted(models)],
        }

    return router
