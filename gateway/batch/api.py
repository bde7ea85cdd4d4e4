"""OpenAI's Files and Batches endpoints, field for field, so the official SDKs work unchanged:
/v1/files (upload, list, retrieve, content, delete) and /v1/batches (create, retrieve, list,
cancel). A caller sees only what its own key created (the Gate puts the key's hash in the scope)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from itertools import chain
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile
from starlette.types import Scope

from embedq.config.settings import GatewaySettings
from embedq.gateway.batch.batches import COMPLETION_WINDOW, Batches
from embedq.gateway.batch.files import FULL_DISK, MAX_FILENAME, Files, read_chunks
from embedq.gateway.batch.input_file import ENDPOINT
from embedq.gateway.openai_shape import OpenAIError, invalid, shown

OWNER = "embedq.owner"  # the scope entry the Gate sets: the hash of the caller's key ("" with no keys)
MAX_METADATA = 16  # key-value pairs, as OpenAI allows
MAX_METADATA_KEY = 64  # characters
MAX_METADATA_VALUE = 512  # characters
MAX_LIST = 10_000


def owner_of(key: bytes) -> str:
    """What a record keeps of the key that made it: never the key itself."""
    return hashlib.sha256(key).hexdigest()[:32]


def owner(request: Request) -> str:
    scope: Scope = request.scope
    return str(scope.get(OWNER, ""))


def page_limit(limit: int | None, default: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= MAX_LIST:
        raise invalid(f"'limit' must be between 1 and {MAX_LIST}, got {limit}", "limit")
    return limit


def check_metadata(metadata: Any) -> dict[str, str] | None:
    """A batch's `metadata` as OpenAI takes it: at most 16 pairs of strings, keys of at most 64
    characters, values of at most 512 (400 naming the one that is not)."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA:
        raise invalid(f"'metadata' must be an object of at most {MAX_METADATA} string key-value pairs", "metadata")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise invalid(f"metadata[{shown(key)}] must be a string, got {type(value).__name__}", "metadata")
        if len(key) > MAX_METADATA_KEY:
            raise invalid(
                f"metadata key {shown(key)} has {len(key)} characters; at most {MAX_METADATA_KEY}", "metadata"
            )
        if len(value) > MAX_METADATA_VALUE:
            raise invalid(
                f"metadata[{shown(key)}] has {len(value)} characters; at most {MAX_METADATA_VALUE}", "metadata"
            )
    return metadata


def checked_upload(form: FormData, max_bytes: int) -> tuple[UploadFile, str]:
    """The uploaded file and its name; OpenAIError for a wrong purpose, no file, too many bytes or a long name."""
    purpose, upload = form.get("purpose"), form.get("file")
    if purpose != "batch":
        raise invalid(f"'purpose' must be 'batch' (the Batch API's input), got {shown(purpose)}", "purpose")
    if not isinstance(upload, UploadFile):
        raise invalid("'file' is required: the batch's input, one JSON request a line (JSONL)", "file")
    size = upload.size or 0
    if size > max_bytes:
        raise OpenAIError(
            413,
            f"the file has {size} bytes; at most {max_bytes} (FILES_MAX_BYTES)",
            param="file",
            code="file_too_large",
        )
    filename = upload.filename or "input.jsonl"
    if len(filename.encode()) > MAX_FILENAME:
        raise invalid(f"the file's name has {len(filename.encode())} bytes; at most {MAX_FILENAME}", "file")
    return upload, filename


async def store_upload(files: Files, upload: UploadFile, filename: str, who: str) -> dict[str, Any]:
    """The file kept under the key's quota, or nothing kept at all (507 when the store is full)."""
    file_id, size = files.new_id(), upload.size or 0
    await files.reserve(file_id, size, who)
    try:
        upload.file.seek(0)
        stored = await asyncio.to_thread(files.store.write, Files.object_name(file_id), read_chunks(upload.file))
        return await files.add(file_id, stored, filename, "batch", who)
    except BaseException as error:
        await files.release(file_id, who)
        if isinstance(error, OSError) and error.errno in FULL_DISK:
            raise OpenAIError(
                507,
                "the gateway's file store is full; nothing was kept: try again later",
                type="server_error",
                param="file",
                code="insufficient_storage",
            ) from None
        raise


def batch_api(settings: GatewaySettings, files: Files, batches: Batches, wake: Callable[[], None]) -> APIRouter:
    """The Batch API's routes; `wake` is called when a batch is created (this replica's driver looks at once)."""
    router = APIRouter()
    router.include_router(file_routes(settings, files))
    router.include_router(batch_routes(settings, files, batches, wake))
    return router


def file_routes(settings: GatewaySettings, files: Files) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/files")
    async def upload(request: Request) -> dict[str, Any]:
        form = await request.form(max_files=1, max_fields=8)
        try:
            upload, filename = checked_upload(form, settings.files_max_bytes)
            return await store_upload(files, upload, filename, owner(request))
        finally:
            await form.close()

    @router.get("/v1/files")
    async def list_files(
        request: Request, after: str | None = None, limit: int | None = None, purpose: str | None = None
    ) -> dict[str, Any]:
        return await files.page(owner(request), after, page_limit(limit, MAX_LIST), purpose)

    @router.get("/v1/files/{file_id}")
    async def retrieve_file(request: Request, file_id: str) -> dict[str, Any]:
        return await files.get(file_id, owner(request))

    @router.get("/v1/files/{file_id}/content")
    async def file_content(request: Request, file_id: str) -> StreamingResponse:
        chunks = await files.content(file_id, owner(request))
        first = next(chunks, b"")  # opened and read here: a file that cannot be read is an error, not a cut stream
        return StreamingResponse(chain([first], chunks), media_type="application/octet-stream")

    @router.delete("/v1/files/{file_id}")
    async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
        return await files.delete(file_id, owner(request))

    return router


def checked_create(body: Any) -> tuple[str, dict[str, str] | None]:
    """The input file's id and the metadata of a POST /v1/batches body; OpenAIError naming what is wrong."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    if body.get("endpoint") != ENDPOINT:
        raise invalid(f"'endpoint' must be {ENDPOINT} (embedq serves embeddings only)", "endpoint")
    if body.get("completion_window") != COMPLETION_WINDOW:
        raise invalid(f"'completion_window' must be {COMPLETION_WINDOW!r}", "completion_window")
    metadata = check_metadata(body.get("metadata"))
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise invalid("'input_file_id' is required (the id POST /v1/files returned)", "input_file_id")
    return input_file_id, metadata


def batch_routes(settings: GatewaySettings, files: Files, batches: Batches, wake: Callable[[], None]) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/batches")
    async def create_batch(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise invalid("the request body is not valid JSON") from None
        input_file_id, metadata = checked_create(body)
        who = owner(request)
        record = await files.record(input_file_id, who)
        if record.get("purpose") != "batch":
            purpose = shown(record.get("purpose"))
            raise invalid(f"file {input_file_id} has purpose {purpose}, not 'batch'", "input_file_id")
        limits = (settings.batch_max_lines, settings.files_max_bytes, settings.http_max_body_bytes)
        created = await batches.create(input_file_id, ENDPOINT, metadata, who, limits)
        wake()
        return created

    @router.get("/v1/batches")
    async def list_batches(request: Request, after: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return await batches.page(owner(request), after, page_limit(limit, 20))

    @router.get("/v1/batches/{batch_id}")
    async def retrieve_batch(request: Request, batch_id: str) -> dict[str, Any]:
        return await batches.get(batch_id, owner(request))

    @router.post("/v1/batches/{batch_id}/cancel")
    async def cancel_batch(request: Request, batch_id: str) -> dict[str, Any]:
        return await batches.cancel(batch_id, owner(request))

    return router
