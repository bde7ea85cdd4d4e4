"""One worker process: load the Encoder once, warm it up, then take jobs a pass at a time: the
jobs waiting in a lane are embedded together, and rq's records of the whole pass are written in
one script when it starts and one when it ends (broker/rq_private/pass_worker.py)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError

from embedq.broker.cache import HITS_FIELD, CacheWrites
from embedq.broker.connection import redis_answers
from embedq.broker.eviction import check_eviction
from embedq.broker.failures import misconfigured
from embedq.broker.histograms import TIMINGS, timing_increments
from embedq.broker.jobs import EmbedRequest, EmbedResult, MsgpackSerializer, pack_refusal, pack_result
from embedq.broker.keys import (
    WORKER_FACTS_TTL,
    cache_index_key,
    cache_prefix,
    cache_stats_key,
    metrics_key,
    timings_key,
    worker_key,
)
from embedq.broker.rq_private import Job, JobStatus, JobTimeoutException, Queue
from embedq.broker.rq_private.pass_worker import Done, PassWorker, ShardKeys, TakenPass
from embedq.broker.rq_private.queues import lane_queues
from embedq.broker.rq_private.records import REFUSAL_FIELD
from embedq.broker.shards import hash_tag, shards_of
from embedq.config import Settings
from embedq.errors import InvalidInput
from embedq.worker import tasks
from embedq.worker.backoff import RedisBackoff, connect
from embedq.worker.caching import RemoteStore, cache_budget, entries_to_store, hits_of, misses_only, with_hits
from embedq.worker.model.encoder import Encoded, Encoder
from embedq.worker.model.quantize import cpu_kind_warning
from embedq.worker.model_claim import claim_queue, model_fingerprint, refresh_claim
from embedq.worker.recovery import bury_worker
from embedq.worker.supervisor.watchdog import Beat

log = logging.getLogger(__name__)

# rq heartbeats a worker every 15 s (PassWorker.heartbeat_every); its record lives this long after.
WORKER_TTL = 45
RESET_AFTER = 30.0  # seconds of serving after which a Redis error starts the backoff over
# Every BULK_EVERY-th pass looks in the bulk lane first: under steady interactive load bulk still
# gets that share of passes (and interactive jobs are served between its micro-batches anyway).
BULK_EVERY = 4
CANCELED = JobStatus.CANCELED.value.encode()  # rq's status of a cancelled job


def default_worker_name() -> str:
    """host.pid: unique per process, and the supervisor can tell a child's name from its pid."""
    return worker_name_for(os.getpid())


def worker_name_for(pid: int) -> str:
    return f"{socket.gethostname()}.{pid}"


# Failures that would fail again the same way: no retry.
PERMANENT_FAILURES = (InvalidInput, tasks.ForbiddenTask, JobTimeoutException)


class EmbedWorker(PassWorker):
    """Passes of coalesced jobs through the Encoder, interactive lane first; plus the facts
    `embedq stats` shows, kept alive by rq's heartbeat."""

    permanent_failures = PERMANENT_FAILURES
    extra_fields = (HITS_FIELD,)  # a partly cached job's hits, left by the enqueue script

    def __init__(
        self,
        *,
        encoder: Encoder,
        settings: Settings,
        facts: dict[str, str],
        stop: threading.Event,
        backoff: RedisBackoff,
        fingerprint: str = "",
        cache_budget: int = 0,
        remote_cache: RemoteStore | None = None,
        parent: int | None = None,
        beat: Beat | None = None,
        home_shard: int = 0,
        **kwargs: Any,
    ) -> None:
        """`fingerprint`, `cache_budget`: the model's (model_claim.model_fingerprint) and the bytes the
        cache may count (caching.cache_budget); the pass's vectors are stored only with both, or in
        `remote_cache` (CACHE_URL) when there is one. `home_shard`: the shard served first (its number; the
        supervisor spreads its workers over them)."""
        super().__init__(
            worker_shards(settings, kwargs["name"], kwargs["connection"], home_shard),
            max_jobs=settings.coalesce_jobs,
            max_texts=settings.coalesce_texts,
            serializer=MsgpackSerializer,
            job_class=tasks.EmbedJob,
            **kwargs,
        )
        self.encoder = encoder
        self.settings = settings
        self.facts = facts
        self.stop, self.backoff = stop, backoff  # set by a stop request; waits while Redis refuses
        self.parent = parent  # stop when this process (the supervisor) is gone
        self.beat = beat  # tells the supervisor when a pass runs, and under what timeout
        self.passes = 0
        self.in_pass = False
        self.fingerprint, self.cache_budget = fingerprint, cache_budget
        self.remote_cache = remote_cache
        self.cache_writes = settings.cache and bool(fingerprint) and (cache_budget > 0 or self.remote_cache is not None)

    def next_lanes(self, shard: ShardKeys) -> list[Queue]:
        self.passes += 1
        interactive, bulk = shard.lanes
        return [bulk, interactive] if self.passes % BULK_EVERY == 0 else [interactive, bulk]

    def execute_pass(self, taken: TakenPass) -> None:
        """Embed the pass's jobs in one inference run and record them together. A job with a bad
        payload fails alone; if the shared run fails, each job is embedded on its own so that one
        bad job cannot fail its neighbours."""
        ready: list[tuple[Job, EmbedRequest]] = []
        for job in taken.jobs:
            try:
                ready.append((job, job.request()))  # type: ignore[attr-defined]
            except (InvalidInput, tasks.ForbiddenTask):
                self.fail_job(job, taken, sys.exc_info())
        if not ready:
            return
        hits = [hits_of(job, self.encoder.dim) for job, _ in ready]
        asked = [misses_only(request, found) for (_, request), found in zip(ready, hits)]
        lane = "bulk" if taken.queue is taken.shard.lanes[1] else "interactive"
        jobs = [job for job, _ in ready]

        def between() -> set[int]:
            if lane == "bulk":
                self._serve_interactive()
            return self._cancelled(jobs)

        timeout = int(max(job.timeout or Queue.DEFAULT_TIMEOUT for job, _ in ready))
        nested, self.in_pass = self.in_pass, True  # inside a bulk pass, its timeout alone runs
        if self.beat is not None and not nested:
            self.beat.passing(timeout)
        started = time.perf_counter()
        outcomes: list[Encoded | Any]
        try:
            with self._penalty(timeout, nested):
                outcomes = list(self.encoder.encode_many(asked, between=between))
        except JobTimeoutException:
            if nested:
                raise
            outcomes = [sys.exc_info()] * len(ready)
        except Exception:
            failure = sys.exc_info()
            outcomes = [failure] if len(ready) == 1 else [self._encode_alone(r, timeout, nested) for r in asked]
        finally:
            self.in_pass = nested
            if self.beat is not None and not nested:
                self.beat.idle()
        infer_ms = (time.perf_counter() - started) * 1000
        done, timings, entries, misses = [], [], {}, 0
        for (job, request), outcome, found in zip(ready, outcomes, hits):
            if outcome is None:  # cancelled while it ran: rq's cancel has recorded it; no result
                self.connection.srem(taken.shard.held, f"{job.id}:{taken.execution_id}")
                self.log.info("Worker %s: job %s cancelled mid-pass", self.name, job.id)
            elif isinstance(outcome, Encoded):
                encoded = with_hits(request, outcome, found)
                if self.cache_writes:
                    entries.update(entries_to_store(job, encoded, found))
                misses += len(outcome.text_tokens) if (job.meta or {}).get("looked") else 0
                record, job_timings = self._done(job, request, encoded, outcome, infer_ms)
                done.append(record)
                timings.append(job_timings)
            else:
                self.fail_job(job, taken, outcome)
        if done:
            written = self._until_written(lambda: self._record(taken, done, lane, timings, entries, misses), len(done))
            if entries and self.remote_cache is not None:
                self.remote_cache.store(entries)
            self.log.info(
                "Worker %s: %s pass: %d jobs, %d texts, inference %.1f ms, %d results written",
                self.name,
                lane,
                len(done),
                sum(item.counts[0] for item in done),
                infer_ms,
                written,
            )

    def _record(
        self,
        taken: TakenPass,
        done: list[Done],
        lane: str,
        timings: list[dict[str, float]],
        entries: dict[str, bytes],
        misses: int,
    ) -> int:
        written = self.finish_pass(
            taken,
            done,
            lane=lane,
            result_ttl=self.settings.result_ttl,
            facts_ttl=WORKER_FACTS_TTL,
            metrics=metrics_key(taken.shard.name),
            timings=timings_key(taken.shard.name),
            histogram=timing_increments(lane, timings),
            cache=CacheWrites(
                "" if self.remote_cache is not None else cache_prefix(taken.shard.name),
                self.fingerprint,
                self.settings.cache_ttl,
                self.cache_budget,
                cache_stats_key(taken.shard.name),
                cache_index_key(taken.shard.name),
                entries,
                misses,
            ),
        )
        if written and taken.shard.on_cluster:  # the worker's facts are in another slot than the pass's keys
            self.connection.hincrby(worker_key(self.name), "jobs_done", written)
        return written

    def _until_written(self, write: Callable[[], int], jobs: int) -> int:
        """The pass's vectors are computed: while Redis refuses (down, out of memory), keep trying to write
        them (leaving the loop would hand the jobs back and run them again, using a retry). On a stop request
        it gives up: the jobs stay started by this worker and are handed back (supervisor, rq's clean-up)."""
        while True:
            try:
                written = write()
            except RedisError as error:
                if self.stop.is_set():
                    self.log.error(
                        "Worker %s: stopping with the results of %d jobs unwritten (Redis: %s); they will be run again",
                        self.name,
                        jobs,
                        type(error).__name__,
                    )
                    raise
                self.backoff.failed(error, f"writing the results of {jobs} jobs")
                continue
            self.backoff.reset()
            return written

    def on_stop_request(self) -> None:
        self.stop.set()  # cuts a wait for Redis short

    def on_loop(self) -> None:
        if self.parent is not None and os.getppid() != self.parent and not self.stop_requested:
            self.log.warning(
                "Worker %s: its supervisor (pid %d) is gone; stopping after this pass", self.name, self.parent
            )
            self.stop.set()
            self.stop_after_this_pass()

    def _penalty(self, timeout: int, nested: bool) -> AbstractContextManager[Any]:
        """rq's SIGALRM timeout; none inside another pass (one alarm: a second would cancel the first)."""
        return nullcontext() if nested else self.death_penalty_class(timeout, JobTimeoutException)  # type: ignore[no-untyped-call]

    def _encode_alone(self, request: EmbedRequest, timeout: int, nested: bool) -> Encoded | Any:
        try:
            with self._penalty(timeout, nested):
                return self.encoder.encode_many([request])[0]
        except JobTimeoutException:
            if nested:
                raise
            return sys.exc_info()
        except Exception:
            return sys.exc_info()

    def _cancelled(self, jobs: list[Job]) -> set[int]:
        """The positions of the pass's jobs cancelled meanwhile (rq's status; one round trip). Redis away:
        none (the pass goes on; its results wait for Redis)."""
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hget(job.key, "status")
                statuses = pipe.execute()
        except RedisError:
            return set()
        return {index for index, status in enumerate(statuses) if status == CANCELED}

    def _serve_interactive(self) -> None:
        """Between two micro-batches of a bulk pass: run the interactive jobs waiting, if any."""
        taken = self.take(self.home, [self.home.lanes[0]], looking_in_passing=True)
        if not isinstance(taken, TakenPass):
            return
        try:
            self.execute_pass(taken)
        except BaseException:  # the bulk pass's timeout, or a stop: these jobs go back untouched
            self.release(taken, taken.jobs)
            raise

    def _done(
        self, job: Job, request: EmbedRequest, encoded: Encoded, computed: Encoded, infer_ms: float
    ) -> tuple[Done, dict[str, float]]:
        """A succeeded job's record, and its timings for the histograms: queue wait, the pass's
        inference, end to end. `encoded`: its answer; `computed`: the part the model ran (the texts not
        cached), which the fleet's counters count."""
        finished = time.time()
        enqueued = job.enqueued_at.timestamp() if job.enqueued_at else encoded.started
        queue_ms = max(0.0, (encoded.started - enqueued) * 1000)
        total_ms = max(0.0, (finished - enqueued) * 1000)
        usage = {"texts": len(request.texts), "tokens": encoded.tokens, "truncated": encoded.truncated}
        if cached := len(request.texts) - len(computed.text_tokens):
            usage["cached"] = cached
        result = EmbedResult(
            job_id=job.id,
            embeddings=encoded.vectors,
            model=self.encoder.spec.name,
            dim=int(encoded.vectors.shape[1]),
            usage=usage,
            text_tokens=encoded.text_tokens,
            timings={"queue_ms": queue_ms, **encoded.timings, "total_ms": total_ms},
            worker=self.name,
        )
        record = Done(
            job=job,
            return_value={"texts": len(request.texts), "dim": result.dim, "tokens": encoded.tokens},
            packed=pack_result(result),
            counts=(len(computed.text_tokens), computed.tokens, computed.truncated),
        )
        return record, dict(zip(TIMINGS, (queue_ms, infer_ms, total_ms)))

    def on_birth(self) -> None:
        key = worker_key(self.name)
        fields: dict[Any, Any] = {**self.facts, "jobs_done": 0}  # redis-py's Mapping type is invariant in its keys
        with self.connection.pipeline() as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, WORKER_FACTS_TTL)
            pipe.execute()

    def on_heartbeat(self, target: Redis | Pipeline, timeout: int | None) -> None:
        target.expire(worker_key(self.name), max(WORKER_FACTS_TTL, timeout or 0))
        refresh_claim(target, self.settings.queue, max(self.worker_ttl, timeout or 0), self.settings.redis_cluster)

    def on_death(self) -> None:
        self.connection.delete(worker_key(self.name))

    def fail_job(self, job: Job, taken: TakenPass, exc_info: Any) -> None:
        """As rq fails a job; a refusal of one of its texts is kept with it, as data for whoever waits."""
        error = exc_info[1]
        if isinstance(error, InvalidInput) and error.refusal is not None:
            with suppress(RedisError):  # the reason in rq's record still says it
                self.connection.hset(job.key, REFUSAL_FIELD, pack_refusal(error.refusal))
        super().fail_job(job, taken, exc_info)

    def on_job_failure(self, job: Job) -> None:
        with suppress(RedisError):  # rq's own failure bookkeeping after this logs the outage
            self.connection.hincrby(metrics_key(self.settings.queue + hash_tag(job.id)), "failed_attempts", 1)


def worker_shards(settings: Settings, name: str, connection: Redis, home: int) -> list[ShardKeys]:
    """The queue's shards as worker `name` serves them: shard `home` (modulo their count) first, then the
    ones after it in turn."""
    names = shards_of(settings)
    first = home % len(names)
    return [
        ShardKeys.of(
            shard,
            tuple(lane_queues(shard, connection, job_class=tasks.EmbedJob).values()),
            name,
            settings.redis_cluster,
        )
        for shard in names[first:] + names[:first]
    ]


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM / SIGINT set `stop` (outside rq's loop, which installs its own handlers; re-entered after it)."""
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ready_encoder(settings: Settings, name: str) -> tuple[Encoder, dict[str, str]]:
    """The model loaded and warmed up, and the facts `embedq stats` shows of this worker."""
    started = time.perf_counter()
    encoder = Encoder.from_settings(settings)
    encoder.encode(["warm-up"])  # the first run optimizes the graph and allocates; keep that off the first job
    load_s = time.perf_counter() - started
    if warning := cpu_kind_warning(encoder.spec.directory):
        log.warning("worker %s: %s", name, warning)
    threads = settings.threads_per_worker()
    providers = ",".join(encoder.providers)
    log.info(
        "worker %s: %s (dim %d, max %d tokens, %s pooling) ready in %.1f s on %s, %d intra-op threads",
        *(name, encoder.spec.name, encoder.dim, encoder.max_length, encoder.pooling, load_s, providers, threads),
    )
    facts = {
        "pid": str(os.getpid()),
        "queue": settings.queue,
        "host": socket.gethostname(),
        "model": encoder.spec.name,
        "dim": str(encoder.dim),
        "providers": providers,
        "threads": str(threads),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_seconds": f"{load_s:.2f}",
    }
    return encoder, facts


def join_the_queue(
    connection: Redis,
    settings: Settings,
    encoder: Encoder,
    name: str,
    worker_ttl: int,
    *,
    read_policy: bool,
    fingerprint: str,
) -> int:
    """Before serving (again): Redis answers, keeps every key (EvictionRisk, a settings error, under
    REQUIRE_NOEVICTION), the queue serves this model (ModelConflict), and what a previous life of this
    process left when it lost Redis mid-pass is handed back. Returns the bytes the cache may count."""
    connection.ping()
    if read_policy:
        check_eviction(connection, settings.require_noeviction, f"worker {name}")
    claim_queue(
        connection,
        settings.queue,
        encoder.spec.name,
        encoder.dim,
        worker_ttl,
        fingerprint,
        shards_of(settings),
        settings.redis_cluster,
    )
    bury_worker(connection, name, "its worker lost Redis", shards_of(settings))
    return cache_budget(connection, settings.cache_max_bytes)


def run_worker(
    settings: Settings,
    *,
    name: str | None = None,
    burst: bool = False,
    parent: int | None = None,
    beat: Path | None = None,
    home_shard: int | None = None,
) -> bool:
    """Load the model, warm it up, then serve jobs until stopped (SIGTERM: finish the pass, exit).

    Losing Redis does not end the process: it waits for Redis to return, hands back the jobs it was
    running, and serves again. `parent`: stop (after the pass in hand) when that process is gone;
    `beat`: a heartbeat file for the supervisor's watchdog; `home_shard`: the shard it serves first (default:
    chosen by its pid). Returns False when the loop ended on an error
    other than that."""
    name = name or default_worker_name()
    beating = Beat(beat) if beat else None  # before the model loads: a slow load is not a hang
    encoder, facts = ready_encoder(settings, name)
    fingerprint = model_fingerprint(encoder)
    remote_cache = RemoteStore.of(settings, fingerprint)  # one connection for the process's life
    stop = threading.Event()
    connection = connect(settings, stop)
    tasks.EmbedJob.configure(settings.limits)
    worker_ttl = max(WORKER_TTL, settings.job_timeout)  # no heartbeat while a pass runs
    backoff = RedisBackoff(f"worker {name}", stop)
    policy_read = False
    while not stop.is_set():
        if parent is not None and os.getppid() != parent:
            log.warning("worker %s: its supervisor (pid %d) is gone; stopping", name, parent)
            break
        began, worker = time.monotonic(), None
        try:
            with stop_on_signals(stop):
                budget = join_the_queue(
                    connection,
                    settings,
                    encoder,
                    name,
                    worker_ttl,
                    read_policy=not policy_read,
                    fingerprint=fingerprint,
                )
                policy_read = True
            if stop.is_set():
                break
            worker = EmbedWorker(
                encoder=encoder,
                settings=settings,
                facts=facts,
                connection=connection,
                name=name,
                worker_ttl=worker_ttl,
                stop=stop,
                backoff=backoff,
                fingerprint=fingerprint,
                cache_budget=budget,
                remote_cache=remote_cache,
                parent=parent,
                beat=beating,
                home_shard=os.getpid() if home_shard is None else home_shard,
            )
            worker.work(burst=burst, logging_level=settings.log_level)
        except RedisError as error:
            if named := misconfigured(error, settings.redis_url):
                raise named from None  # a setting to fix (exit 2), not an outage to wait out
            if time.monotonic() - began > RESET_AFTER:
                backoff.reset()  # it served a while: this is a new outage, not the same one
            with stop_on_signals(stop):
                if not stop.is_set():
                    backoff.failed(error, "serving")
            continue
        if worker.stop_requested or burst:
            return True
        if redis_answers(connection):
            return False
        log.error("worker %s: the loop ended after losing Redis; will reconnect", name)
    log.info("worker %s: stopped while Redis refused", name)
    return True
