"""Runs batches. Every gateway replica looks for batches not yet final and drives each one it gets
the lease of: validates its input, sends its chunks to the bulk lane a window at a time, writes each
finished chunk's output lines to the file store and counts it (once), and finalizes. A replica that
dies stops renewing its leases, and another takes its batches over where the counted chunks end."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import numpy as np
import orjson
from redis import Redis
from redis.exceptions import RedisError

from embedq.broker.cache import CacheUse
from embedq.broker.jobs import EmbedResult, validate_request
from embedq.broker.rq_private.records import cancel_jobs
from embedq.config.settings import GatewaySettings
from embedq.errors import InvalidInput, InvalidSettings, JobFailed, JobNotFound, JobTimeout, QueueFull, QueueUnavailable
from embedq.gateway.batch.batches import FINAL, Batches, LeaseLost
from embedq.gateway.batch.files import FULL_DISK, Files
from embedq.gateway.batch.input_file import (
    Chunk,
    Line,
    ParsedInput,
    line_request,
    parse_input,
    plan_chunks,
    read_bodies,
)
from embedq.gateway.embeddings import failed
from embedq.gateway.fleet import Fleet, ServedModel
from embedq.gateway.openai_shape import OpenAIError, embeddings_body, invalid, refused

log = logging.getLogger(__name__)

CHUNK_TEXTS = 256  # texts a chunk gathers: its output is written and counted at once
JOB_TEXTS = 256  # texts per job: a chunk is one job (of at most MAX_TEXTS_PER_JOB), one worker's pass
WINDOW = 8  # chunks of one batch in flight (at most half of MAX_BULK_QUEUE_LENGTH): keeps a fleet's passes full
MAX_DRIVEN = 4  # batches one replica drives at once
MAX_FAILURES = 3  # unexpected errors in a row driving one batch before it is failed
LOOK_EVERY = 1.0  # seconds between looks for batches to drive
RENEW_EVERY = 3.0  # seconds between lease renewals (the lease lasts batches.LEASE_MS)
RETRY_PAUSE = 1.0  # after a refused or failed submit
JOB_WAIT = 3600.0  # seconds a chunk waits for its jobs before it is sent again
SWEEP_EVERY = 600.0  # seconds between sweeps of expired files
OUTPUT, ERROR = b"+", b"-"  # whether a line of a chunk goes to the output file or to the error file
WRITE_TRIES = 5  # writes of a chunk's lines tried on a full file store before the batch fails
WRITE_PAUSE = 2.0  # seconds between them


def output_file_id(batch_id: str, kind: str) -> str:
    """The same id each time a batch is finalized, so finalizing again replaces rather than adds."""
    return "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:24]


def pieces_name(batch_id: str, kind: str) -> str:
    """Where a batch's chunks put their output (or error) lines until the batch ends and they become its file."""
    return f"batches/{batch_id}/{kind}"


def piece_name(batch_id: str, kind: str, chunk: int) -> str:
    return f"{pieces_name(batch_id, kind)}/{chunk:06d}"


class FilesFull(Exception):
    """The file store stayed full while a chunk's lines waited to be written."""


class Stop(Exception):
    """The batch is being cancelled or has expired: start nothing more."""


class BatchDriver:
    def __init__(self, settings: GatewaySettings, fleet: Fleet, sync: Redis, files: Files, batches: Batches) -> None:
        self.settings, self.fleet, self.sync, self.files, self.batches = settings, fleet, sync, files, batches
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.driving: dict[str, asyncio.Task[None]] = {}
        self.failures: dict[str, int] = {}  # per batch, unexpected errors in a row
        self.woken = asyncio.Event()

    def wake(self) -> None:
        """Look for batches now (one was just created here), not at the next LOOK_EVERY."""
        self.woken.set()

    async def run(self) -> None:
        swept = 0.0
        while True:
            try:
                await self.look()
                if time.monotonic() - swept > SWEEP_EVERY:
                    cutoff = time.time() - self.files.retention
                    removed = await asyncio.to_thread(self.files.store.sweep, cutoff)
                    swept = time.monotonic()
                    if removed:
                        log.info("embedq serve: removed %d files older than FILES_RETENTION", removed)
            except RedisError as error:
                log.debug("embedq serve: looking for batches: Redis did not answer (%s)", type(error).__name__)
            with suppress(TimeoutError):
                await asyncio.wait_for(self.woken.wait(), LOOK_EVERY)
            self.woken.clear()

    async def look(self) -> None:
        for batch_id in await self.batches.active():
            if batch_id in self.driving or len(self.driving) >= MAX_DRIVEN:
                continue
            if await self.batches.take_lease(batch_id, self.holder):
                task = asyncio.create_task(self.drive(batch_id))
                self.driving[batch_id] = task
                task.add_done_callback(self.forget)

    def forget(self, task: asyncio.Task[None]) -> None:
        for batch_id, driving in list(self.driving.items()):
            if driving is task:
                del self.driving[batch_id]

    async def drive(self, batch_id: str) -> None:
        run = BatchRun(self, batch_id)
        work = asyncio.ensure_future(run.drive())
        keeper = asyncio.ensure_future(self.keep_lease(run, work))
        try:
            await work
            self.failures.pop(batch_id, None)
        except (LeaseLost, asyncio.CancelledError):
            log.info("embedq serve: batch %s: this gateway no longer drives it", batch_id)
        except RedisError as error:
            log.warning(
                "embedq serve: batch %s: Redis did not answer (%s); taken up again", batch_id, type(error).__name__
            )
            await asyncio.sleep(5 * RETRY_PAUSE)
        except Exception as error:
            failures = self.failures[batch_id] = self.failures.get(batch_id, 0) + 1
            log.exception("embedq serve: batch %s: driving failed (%d of %d)", batch_id, failures, MAX_FAILURES)
            if failures >= MAX_FAILURES:  # it would fail the same way again: say so, rather than loop
                with suppress(RedisError, LeaseLost):
                    message = f"embedq could not run this batch ({type(error).__name__}; the gateway's log has more)"
                    await run.fail("internal_error", message)
                self.failures.pop(batch_id, None)
            await asyncio.sleep(5 * RETRY_PAUSE)
        finally:
            keeper.cancel()

    async def aclose(self) -> None:
        """Stop driving and hand the leases back, so another replica takes the batches over at once."""
        driven = dict(self.driving)
        for task in driven.values():
            task.cancel()
        await asyncio.gather(*driven.values(), return_exceptions=True)
        for batch_id in driven:
            with suppress(RedisError):
                await self.batches.release_lease(batch_id, self.holder)

    async def keep_lease(self, run: BatchRun, work: asyncio.Future[None]) -> None:
        """Renew the lease; stop the run when it is lost, or when the batch is cancelled or expires."""
        while not work.done():
            await asyncio.sleep(RENEW_EVERY)
            try:
                held = await self.batches.take_lease(run.batch_id, self.holder)
                record = await self.batches.record(run.batch_id)
            except RedisError:
                continue  # the lease outlives a short outage; a long one hands the batch to whoever is back
            except OpenAIError:  # the record expired meanwhile
                held = False
            if not held:
                work.cancel()
                return
            if record["status"] == "cancelling":
                run.stop("cancelled")
            elif time.time() > int(record["expires_at"]) and record["status"] == "in_progress":
                run.stop("expired")


class BatchRun:
    """One batch, driven by this replica while it holds the lease."""

    def __init__(self, driver: BatchDriver, batch_id: str) -> None:
        self.driver, self.batch_id = driver, batch_id
        self.settings = driver.settings
        self.batches, self.files = driver.batches, driver.files
        self.ending: str | None = None  # "cancelled" or "expired" once asked to stop
        self.stopping = asyncio.Event()
        self.job_ids: list[list[str]] = []  # of the chunks in flight: cancelled when the batch stops
        self.job_texts = min(JOB_TEXTS, self.settings.max_texts_per_job)
        self.cache = CacheUse()  # the batch's owner's scope, once its record is read (batch_cache)
        # leave half the bulk lane to other work: the batch's windows never fill it alone
        self.window = max(1, min(WINDOW, self.settings.max_bulk_queue_length // 2))
        self.refusals: set[str] = set()  # kinds of refused or failed submits already logged

    def stop(self, ending: str) -> None:
        if not self.stopping.is_set():
            self.ending = ending
            self.stopping.set()

    async def drive(self) -> None:
        try:
            record = await self.batches.record(self.batch_id)
        except OpenAIError:  # expired or deleted: nothing left to drive
            await self.batches.forget_active(self.batch_id)
            return
        self.cache = batch_cache(record, self.settings)
        if record["status"] in FINAL:  # ended, though still listed as active
            await self.batches.forget_active(self.batch_id)
            return
        # jobs a replica that drove the batch before left in the lane: their chunks run again from here
        await self.drop_jobs(await self.batches.tracked_jobs(self.batch_id))
        try:
            if record["status"] == "validating":
                record, lines = await self.validate(record)
                if record["status"] == "failed":
                    return
            else:  # validated before this replica took the batch over: the same lines, read again
                lines = (await asyncio.to_thread(self.scan, record, lambda _: True)).lines
            chunks = await asyncio.to_thread(plan_chunks, lines, CHUNK_TEXTS)
            if record["status"] == "cancelling":
                self.stop("cancelled")
            if record["status"] == "in_progress":
                await self.run_chunks(record, chunks)
        except FileNotFoundError:
            await self.fail("input_file_missing", f"the input file {record['input_file_id']} is gone")
            return
        except FilesFull:
            await self.fail(
                "insufficient_storage",
                "the gateway's file store is full: the lines that finished are in the output and error files, "
                "the others did not run",
            )
            return
        await self.finalize(await self.batches.record(self.batch_id), chunks)

    def scan(self, record: dict[str, str], known_model: Callable[[str], bool]) -> ParsedInput:
        """The input file checked as a stream, under the limits the batch was created with."""
        max_line_bytes = int(record.get("max_line_bytes") or self.settings.http_max_body_bytes)
        with self.files.store.open(Files.object_name(record["input_file_id"])) as handle:
            return parse_input(
                handle,
                int(record["max_lines"]),
                known_model,
                max_bytes=int(record["max_bytes"]),
                max_line_bytes=max_line_bytes,
            )

    async def validate(self, record: dict[str, str]) -> tuple[dict[str, str], list[Line]]:
        """Check the input (in a thread: a large file takes a while); the batch's record after, and its lines."""
        models = await self.driver.fleet.models()
        parsed = await asyncio.to_thread(self.scan, record, lambda name: self.driver.fleet.resolve(name) in models)
        now = int(time.time())
        if parsed.errors:
            await self.batches.transition(
                self.batch_id,
                self.driver.holder,
                ("validating", "cancelling"),
                status="failed",
                failed_at=now,
                errors=orjson.dumps(parsed.errors).decode(),
            )
            log.info("embedq serve: batch %s failed validation (%d lines with errors)", self.batch_id, parsed.bad_lines)
        else:
            await self.batches.transition(
                self.batch_id,
                self.driver.holder,
                ("validating",),
                status="in_progress",
                in_progress_at=now,
                total=len(parsed.lines),
            )
            log.info("embedq serve: batch %s: %d requests", self.batch_id, len(parsed.lines))
        return await self.batches.record(self.batch_id), parsed.lines

    async def fail(self, code: str, message: str) -> None:
        """End the batch failed, saying why in `errors`; the lines that finished stay in its output and
        error files."""
        try:
            record = await self.batches.record(self.batch_id)
        except OpenAIError:
            return
        errors = [{"code": code, "message": message, "param": None, "line": None}]
        fields = {"status": "failed", "failed_at": int(time.time()), "errors": orjson.dumps(errors).decode()}
        allowed = ("validating", "in_progress", "cancelling", "finalizing")
        if await self.end(record, allowed, fields) == "ok":
            log.warning("embedq serve: batch %s failed: %s", self.batch_id, code)

    async def end(self, record: dict[str, str], allowed: tuple[str, ...], fields: dict[str, Any]) -> str:
        """Move to a final status: no job of the batch left in the lane, the pieces the chunks wrote made
        the output and error files (no copy: a full disk cannot lose them), then the fenced transition."""
        await self.drop_jobs(await self.batches.tracked_jobs(self.batch_id))
        for kind in ("output", "error"):
            file_id = output_file_id(self.batch_id, kind)
            size = await asyncio.to_thread(
                self.files.store.adopt, pieces_name(self.batch_id, kind), Files.object_name(file_id)
            )
            if size:
                name = f"{self.batch_id}_{kind}.jsonl"
                await self.files.add(file_id, size, name, "batch_output", record.get("owner", ""))
                fields[f"{kind}_file_id"] = file_id
        outcome = await self.batches.transition(self.batch_id, self.driver.holder, allowed, **fields)
        if outcome == "ok":
            await asyncio.to_thread(self.files.store.delete, f"batches/{self.batch_id}")
            await self.batches.forget_jobs(self.batch_id)
        return outcome

    async def drop_jobs(self, job_ids: list[str]) -> None:
        if job_ids:
            cancelled = await asyncio.to_thread(cancel_jobs, self.driver.sync, job_ids)
            await self.batches.untrack_jobs(self.batch_id, job_ids)
            if cancelled:
                log.info("embedq serve: batch %s: %d of its queued jobs cancelled", self.batch_id, cancelled)

    async def run_chunks(self, record: dict[str, str], chunks: list[Chunk]) -> None:
        """Every chunk not yet counted, WINDOW at a time, until all are counted or the batch stops."""
        done = await self.batches.done_chunks(self.batch_id)
        todo = [chunk for chunk in chunks if chunk.number not in done]
        todo.reverse()
        in_flight: set[asyncio.Future[Any]] = set()
        stopping = asyncio.ensure_future(self.stopping.wait())
        watched = {stopping}  # until the batch is asked to stop; then only the chunks still in flight
        try:
            while todo or in_flight:
                while todo and len(in_flight) < self.window and not self.stopping.is_set():
                    in_flight.add(asyncio.ensure_future(self.run_chunk(record, todo.pop())))
                if not in_flight:
                    break
                finished, pending = await asyncio.wait(in_flight | watched, return_when=asyncio.FIRST_COMPLETED)
                in_flight = pending - watched
                for task in finished - watched:
                    task.result()  # LeaseLost, a full disk and the unexpected end the run
                if stopping in finished:  # the jobs no worker has started go; the others finish and count
                    watched = set()
                    ids = [job_id for chunk_ids in self.job_ids for job_id in chunk_ids]
                    cancelled = await asyncio.to_thread(cancel_jobs, self.driver.sync, ids)
                    log.info("embedq serve: batch %s %s: %d jobs cancelled", self.batch_id, self.ending, cancelled)
        finally:
            stopping.cancel()
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def run_chunk(self, record: dict[str, str], chunk: Chunk) -> None:
        """Embed the chunk's lines, write its pieces, count it. Returns without counting if the batch stops."""
        bodies = await asyncio.to_thread(self.read_bodies, record["input_file_id"], chunk)
        try:
            model = await self.served(chunk.model)
            lines = await self.embed_lines(model, chunk, bodies)
        except Stop:
            return
        del bodies
        completed = 0
        for kind, mark in (("output", OUTPUT), ("error", ERROR)):
            picked = [line + b"\n" for marked, line in lines if marked == mark]
            completed += len(picked) if mark == OUTPUT else 0
            if picked:
                await self.write_piece(piece_name(self.batch_id, kind, chunk.number), picked)
        await self.batches.chunk_done(record, self.driver.holder, chunk.number, completed, len(lines) - completed)

    def delete_pieces(self, names: list[str]) -> None:
        for name in names:
            self.files.store.delete(name)

    def read_bodies(self, file_id: str, chunk: Chunk) -> list[Any]:
        with self.files.store.open(Files.object_name(file_id)) as handle:
            return read_bodies(handle, chunk.lines)

    async def write_piece(self, name: str, lines: list[bytes]) -> None:
        """A chunk's output (or error) lines, in the store; a full store is tried again WRITE_TRIES
        times (a sweep or a deleted file may make room), then FilesFull."""
        for attempt in range(WRITE_TRIES):
            try:
                await asyncio.to_thread(self.files.store.write, name, lines)
                return
            except OSError as error:
                if error.errno not in FULL_DISK:
                    raise
                log.warning("embedq serve: batch %s: the file store is full (try %d)", self.batch_id, attempt + 1)
                await asyncio.sleep(WRITE_PAUSE)
        raise FilesFull(name)

    async def served(self, requested: str) -> ServedModel:
        """The model's live queue, waiting while no worker serves it."""
        name = self.driver.fleet.resolve(requested)
        while True:
            if self.stopping.is_set():
                raise Stop
            try:
                model = (await self.driver.fleet.models()).get(name)
            except RedisError:
                model = None
            if model is not None and model.live:
                return model
            await asyncio.sleep(RETRY_PAUSE)

    async def embed_lines(self, model: ServedModel, chunk: Chunk, bodies: list[Any]) -> list[tuple[bytes, bytes]]:
        """Each line's output line, marked OUTPUT or ERROR. A line the body of which is off-schema fails
        alone; if a worker fails a job of the chunk, each line is sent again on its own."""
        lines: list[tuple[bytes, bytes]] = []
        ready: list[tuple[Line, list[str], str]] = []
        dimensions = None
        for line, body in zip(chunk.lines, bodies):
            try:
                texts, encoding, dimensions = self.check(body, model)
            except OpenAIError as error:
                lines.append((ERROR, response_line(line, error.status, error.body())))
                continue
            ready.append((line, texts, encoding))
        if not ready:
            return lines
        try:
            results = await self.embed(model, [text for _, texts, _ in ready for text in texts], dimensions)
        except JobFailed:
            if self.stopping.is_set():
                raise Stop from None
            for line, texts, encoding in ready:  # which line did it? each on its own
                lines.append(await self.embed_alone(model, line, texts, encoding, dimensions))
            return lines
        return lines + answered(ready, results, model.name)

    async def embed_alone(
        self, model: ServedModel, line: Line, texts: list[str], encoding: str, dimensions: int | None
    ) -> tuple[bytes, bytes]:
        job_ids: list[str] = []
        try:
            results = await self.embed(model, texts, dimensions, job_ids)
        except JobFailed as error:
            if self.stopping.is_set():
                raise Stop from None
            refused = failed(error, job_ids, self.job_texts)
            return ERROR, response_line(line, refused.status, refused.body())
        return answered([(line, texts, encoding)], results, model.name)[0]

    def check(self, body: Any, model: ServedModel) -> tuple[list[str], str, int | None]:
        """What a line asks, checked as /v1/embeddings checks a request (OpenAIError 400)."""
        texts, encoding, dimensions = line_request(body, self.settings.http_max_inputs)
        if dimensions is not None and dimensions > model.dim:
            raise invalid(f"'dimensions' is {dimensions}, more than {model.name}'s {model.dim}", "dimensions")
        limits = self.settings.limits
        for index, text in enumerate(texts):
            try:
                validate_request([text], limits=limits)
            except InvalidInput as error:
                raise refused(error.refusal, index) if error.refusal else invalid(str(error), "input") from None
        return texts, encoding, dimensions

    async def embed(
        self, model: ServedModel, texts: list[str], dimensions: int | None, job_ids: list[str] | None = None
    ) -> list[EmbedResult]:
        """Submit `texts` in jobs of JOB_TEXTS to the bulk lane and wait for them: sent again when the lane
        is full, Redis is away or the jobs vanish; JobFailed when a worker failed one."""
        step = self.job_texts
        batches = [texts[start : start + step] for start in range(0, len(texts), step)]
        client = self.driver.fleet.client(model)
        while True:
            if self.stopping.is_set():
                raise Stop
            ids: list[str] = [] if job_ids is None else job_ids
            ids.clear()
            self.job_ids.append(ids)
            try:
                results = await client.embed_results(
                    batches,
                    timeout=JOB_WAIT,
                    job_ids=ids,
                    planned=lambda planned: self.batches.track_jobs(self.batch_id, planned),
                    dimensions=dimensions,
                    truncate=self.settings.http_truncate,
                    priority="bulk",
                    cache=self.cache,
                )
                await self.batches.untrack_jobs(self.batch_id, ids)
                return results
            except (QueueFull, QueueUnavailable, InvalidSettings, JobTimeout, JobNotFound) as error:
                kind = type(error).__name__
                level = logging.DEBUG if kind in self.refusals else logging.WARNING  # once per kind and batch
                self.refusals.add(kind)
                log.log(level, "embedq serve: batch %s: jobs sent again after %s: %s", self.batch_id, kind, error)
                if isinstance(error, JobTimeout):
                    await asyncio.to_thread(cancel_jobs, self.driver.sync, ids)
            finally:
                self.job_ids = [other for other in self.job_ids if other is not ids]
            await asyncio.sleep(RETRY_PAUSE)

    async def finalize(self, record: dict[str, str], chunks: list[Chunk]) -> None:
        """Write the output and error files from the counted chunks and end the batch: completed when
        every chunk is counted, else cancelled or expired (an expired batch's unrun lines go to the
        error file). Run again after a takeover, it writes the same files under the same ids."""
        status = record["status"]
        if status in FINAL:
            return
        done = await self.batches.done_chunks(self.batch_id)
        if status == "in_progress" and len(done) < len(chunks) and self.ending != "expired":
            return  # stopped without an ending: the lease was lost
        ending = {"in_progress": "completed", "finalizing": "completed", "cancelling": "cancelled"}[status]
        if status == "in_progress" and self.ending == "expired":
            ending = "expired"
        allowed: tuple[str, ...] = (status,)
        if ending == "completed" and status == "in_progress":
            await self.batches.transition(
                self.batch_id, self.driver.holder, ("in_progress",), status="finalizing", finalizing_at=int(time.time())
            )
            allowed = ("finalizing",)
        fields: dict[str, Any] = {"status": ending, f"{ending}_at": int(time.time())}
        uncounted = [chunk for chunk in chunks if chunk.number not in done]
        # pieces written but not counted before a takeover: their lines did not finish here
        stale = [piece_name(self.batch_id, kind, chunk.number) for chunk in uncounted for kind in ("output", "error")]
        await asyncio.to_thread(self.delete_pieces, stale)
        if ending == "expired" and uncounted:  # the lines the window closed on, after every chunk's errors
            expired = [expired_line(line) + b"\n" for chunk in uncounted for line in chunk.lines]
            await self.write_piece(piece_name(self.batch_id, "error", len(chunks)), expired)
            fields["failed"] = int(record.get("failed", 0)) + len(expired)
        if await self.end(record, allowed, fields) == "ok":
            log.info("embedq serve: batch %s %s", self.batch_id, ending)


def answered(
    ready: list[tuple[Line, list[str], str]], results: list[EmbedResult], model: str
) -> list[tuple[bytes, bytes]]:
    """The output line of each of `ready`'s lines, whose texts (in that order) the jobs of `results` embedded."""
    vectors = np.concatenate([result.embeddings for result in results])
    tokens = [count for result in results for count in token_counts(result)]
    lines, start = [], 0
    for line, texts, encoding in ready:
        end = start + len(texts)
        body = embeddings_body(vectors[start:end], sum(tokens[start:end]), model, encoding)
        lines.append((OUTPUT, response_line(line, 200, body)))
        start = end
    return lines


def token_counts(result: EmbedResult) -> list[int]:
    """Tokens per text (a worker older than the per-text counts: the job's tokens spread evenly)."""
    if len(result.text_tokens) == len(result.embeddings):
        return result.text_tokens
    rows = max(len(result.embeddings), 1)
    return [int(result.usage.get("tokens", 0)) // rows] * len(result.embeddings)


def output_line(line: Line, response: dict[str, Any] | None, error: dict[str, str] | None) -> bytes:
    """One line of OpenAI's batch output: the response the request got, or why it got none."""
    record = {
        "id": f"batch_req_{secrets.token_hex(12)}",
        "custom_id": line.custom_id,
        "response": response,
        "error": error,
    }
    return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)


def response_line(line: Line, status: int, body: dict[str, Any]) -> bytes:
    return output_line(line, {"status_code": status, "request_id": secrets.token_hex(16), "body": body}, None)


def expired_line(line: Line) -> bytes:
    """A line the batch's completion window closed on before it ran."""
    return output_line(line, None, {"code": "batch_expired", "message": "the batch expired before this request ran"})


def batch_cache(record: dict[str, str], settings: GatewaySettings) -> CacheUse:
    """A batch's lines use the cache in the scope of the key that created it (CACHE_SCOPE=key), as its
    requests to /v1/embeddings would."""
    return CacheUse(scope=record.get("owner", "") if settings.cache_scope == "key" else "")
