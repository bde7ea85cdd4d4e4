"""The Batch API's files: their bytes in a FileStore (a directory by default, EMBEDQ_FILES_DIR; the small
interface lets an object store follow) and their records in Redis (OpenAI's file object fields, the
owner's key hash), so every gateway replica answers for every file."""

from __future__ import annotations

import asyncio
import errno
import io
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from redis.asyncio import Redis as AsyncRedis

from embedq.broker.keys import BatchKeys
from embedq.broker.scripts import bind
from embedq.gateway.batch import records
from embedq.gateway.openai_shape import OpenAIError, shown
from embedq.producer.stats import as_text

READ_SIZE = 1024 * 1024
MAX_FILENAME = 255  # bytes of an uploaded file's name (UTF-8)
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class FileStore(Protocol):
    """Whole objects by name (`files/{id}`, `batches/{id}/…`): written at once, read as a stream."""

    def write(self, name: str, chunks: Iterable[bytes]) -> int:
        """Store the object (replacing any of that name) only once every chunk is written; its size."""
        ...

    def open(self, name: str) -> BinaryIO:
        """The object's bytes (an adopted directory's pieces one after another)."""
        ...

    def adopt(self, pieces: str, name: str) -> int:
        """Make the objects under `pieces/` the object `name`, read as their concatenation in name order,
        without copying them (finalizing a batch needs no free space); its size. Done again after the
        pieces moved, it gives the same object."""
        ...

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> None:
        """Remove the object, or every object under `name/`; nothing if there is none."""
        ...

    def sweep(self, older_than: float) -> int:
        """Remove objects last written before `older_than` (unix s); how many."""
        ...


class DirectoryStore:
    """A FileStore in a local directory (or a volume several gateways mount)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object name {name!r} leaves the store")
        return path

    def write(self, name: str, chunks: Iterable[bytes]) -> int:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".partial-", delete=False) as handle:
            try:
                for chunk in chunks:
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            except BaseException:
                Path(handle.name).unlink(missing_ok=True)
                raise
        os.replace(handle.name, path)
        return size

    def open(self, name: str) -> BinaryIO:
        path = self._path(name)
        if path.is_dir():
            return io.BufferedReader(Pieces(sorted(item for item in path.iterdir() if item.is_file())), READ_SIZE)
        return path.open("rb")

    def adopt(self, pieces: str, name: str) -> int:
        source, target = self._path(pieces), self._path(name)
        if source.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            self.delete(name)
            os.replace(source, target)
        if not target.exists():
            return 0
        now = time.time()
        size = 0
        for item in target.iterdir() if target.is_dir() else [target]:
            os.utime(item, (now, now))  # the retention sweep counts from now, as for any new file
            size += item.stat().st_size
        return size

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def delete(self, name: str) -> None:
        path = self._path(name)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def sweep(self, older_than: float) -> int:
        removed = 0
        for path in sorted(self.root.rglob("*"), reverse=True) if self.root.is_dir() else ():
            try:
                if path.is_file() and path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
                elif path.is_dir() and not any(path.iterdir()) and path.stat().st_mtime < older_than:
                    path.rmdir()  # what an adopted object or a batch's pieces leave behind
            except OSError:  # another replica swept it first, or it filled meanwhile
                pass
        return removed


class Pieces(io.RawIOBase):
    """Several files read as one, in order: an adopted object."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.current: io.BufferedReader | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            if self.current is None:
                if not self.paths:
                    return 0
                self.current = self.paths.pop(0).open("rb")
            count: int = self.current.readinto(buffer)
            if count:
                return count
            self.current.close()
            self.current = None

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
        super().close()


def read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(READ_SIZE):
            yield chunk


def not_found(file_id: str) -> OpenAIError:
    return OpenAIError(404, f"no file {shown(file_id)}", param="file_id", code="file_not_found")


class Files:
    """File records in Redis, contents in the store. `owner`: the hash of the caller's key ("" with no
    keys configured, when every caller sees every file)."""

    def __init__(self, connection: AsyncRedis, store: FileStore, retention: float, quota: int, keys: BatchKeys) -> None:
        self.connection, self.store, self.retention, self.quota, self.keys = connection, store, retention, quota, keys
        self._reserve = bind(connection, "reserve_file")
        self._delete = bind(connection, "delete_file")

    @staticmethod
    def object_name(file_id: str) -> str:
        return f"files/{file_id}"

    async def reserve(self, file_id: str, size: int, owner: str) -> None:
        """Count an upload of `size` bytes against its owner's FILES_QUOTA_BYTES before it is written:
        429 if the owner's files would pass it. `release` undoes it if the upload fails."""
        now = int(time.time())
        counted, used = await self._reserve(
            [self.keys.usage(owner)], [file_id, size, now + int(self.retention), now, self.quota]
        )
        if not counted:
            raise OpenAIError(
                429,
                f"this key's files hold {int(used)} bytes; {size} more would pass its quota of {self.quota} bytes "
                "(FILES_QUOTA_BYTES): delete files it no longer needs",
                type="rate_limit_error",
                param="file",
                code="storage_quota_exceeded",
            )

    async def release(self, file_id: str, owner: str) -> None:
        await self.connection.hdel(self.keys.usage(owner), file_id)

    async def add(self, file_id: str, size: int, filename: str, purpose: str, owner: str) -> dict[str, Any]:
        """Record a file whose bytes are in the store already (the same id again: the same record). It
        counts against its owner's quota (a batch's output is never refused for it)."""
        created = int(time.time())
        record: dict[Any, Any] = {  # redis-py's Mapping type is invariant in its keys
            "id": file_id,
            "bytes": size,
            "created_at": created,
            "filename": filename,
            "purpose": purpose,
            "owner": owner,
            "expires_at": created + int(self.retention),
        }
        async with self.connection.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.file(file_id), mapping=record)
            pipe.expireat(self.keys.file(file_id), record["expires_at"])
            pipe.zadd(self.keys.files, {file_id: created})
            pipe.hset(self.keys.usage(owner), file_id, f"{size}:{record['expires_at']}")
            pipe.expireat(self.keys.usage(owner), record["expires_at"])
            await pipe.execute()
        return public(record)

    @staticmethod
    def new_id() -> str:
        return f"file-{secrets.token_hex(12)}"

    async def record(self, file_id: str, owner: str) -> dict[str, Any]:
        """The file's record; 404 if there is none or another key owns it."""
        record = await records.read(self.connection, self.keys.file(file_id))
        if not records.visible(record, owner):
            raise not_found(file_id)
        return record

    async def get(self, file_id: str, owner: str) -> dict[str, Any]:
        return public(await self.record(file_id, owner))

    async def page(self, owner: str, after: str | None, limit: int, purpose: str | None) -> dict[str, Any]:
        """Newest first, as OpenAI lists them; `after`: the last id of the previous page."""
        return await records.page(
            self.connection,
            self.keys.files,
            self.keys.file,
            retention=self.retention,
            owner=owner,
            after=after,
            limit=limit,
            keep=lambda record: purpose is None or record.get("purpose") == purpose,
            public=public,
        )

    async def delete(self, file_id: str, owner: str) -> dict[str, Any]:
        """Gone from the store and Redis; 409 while a batch that is not yet final reads it."""
        record = await self.record(file_id, owner)
        keys = [self.keys.file(file_id), self.keys.files, self.keys.usage(record.get("owner", "")), self.keys.active]
        reader = await self._delete(keys, [file_id, self.keys.batch("")])
        if reader:
            raise OpenAIError(
                409,
                f"file {shown(file_id)} is the input of batch {as_text(reader)}, which is not finished: cancel it or "
                "wait for it to end first",
                param="file_id",
                code="file_in_use",
            )
        await asyncio.to_thread(self.store.delete, self.object_name(file_id))
        return {"id": file_id, "object": "file", "deleted": True}

    async def content(self, file_id: str, owner: str) -> Iterator[bytes]:
        """The file's bytes, to stream (a missing object: 404, as if the record were gone)."""
        await self.record(file_id, owner)
        try:
            handle = await asyncio.to_thread(self.store.open, self.object_name(file_id))
        except FileNotFoundError:
            raise not_found(file_id) from None
        return read_chunks(handle)


def public(record: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's file object (without the owner)."""
    return {
        "id": record["id"],
        "object": "file",
        "bytes": int(record["bytes"]),
        "created_at": int(record["created_at"]),
        "expires_at": int(record["expires_at"]),
        "filename": record["filename"],
        "purpose": record["purpose"],
        "status": "processed",
        "status_details": None,
    }
