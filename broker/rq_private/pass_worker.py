"""PassWorker: rq's SimpleWorker with a loop of its own that takes jobs a pass at a time and records a
whole pass in one script when it starts and one when it succeeds."""

from __future__ import annotations

import time
import traceback
from base64 import b64encode
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError, RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

from embedq.broker.cache import CacheWrites
from embedq.broker.direct import execute
from embedq.broker.doorbells import DoorbellWatch
from embedq.broker.keys import (
    DOORBELL_WAIT,
    IDLE_FOR,
    bell_key,
    doorbell_key,
    held_key,
    idle_key,
    waiters_key,
    worker_key,
)
from embedq.broker.rq_private.hardening import OVERSIZED, GuardedJob, NamedTimeoutPenalty, restored
from embedq.broker.rq_private.records import result_stream_key
from embedq.broker.scripts import bind, load
from embedq.broker.shards import hash_tag

TAKE_PASS = load("take_pass")  # sent by its SHA behind the idle wait (bind's Script would ask SCRIPT EXISTS first)

# What a pass reads of each job hash (Job.restore's names): a failure reads the whole job again.
PASS_FIELDS = ("status", "data", "meta", "timeout", "origin", "enqueued_at", "result_ttl")


@dataclass(frozen=True)
class ShardKeys:
    """One shard of the queue as a worker's passes use it (broker/shards.py): its lanes' rq queues, the
    doorbell idle workers block on, this worker's own doorbell and held set there, and the sorted sets of
    its idle workers (by when they last looked) and waiting ones (by when they went idle). `suspended`,
    `worker`, `facts`: the suspension flag, rq's hash of this worker and embedq's facts of it as the pass
    scripts touch them; on a Redis Cluster, where a script's keys share one slot, the shard's own
    suspension flag, and `held` for the other two (the scripts then leave them alone)."""

    name: str
    lanes: tuple[Queue, ...]
    doorbell: str
    bell: str
    held: str
    idle: str
    waiters: str
    suspended: str
    worker: str
    facts: str

    @classmethod
    def of(cls, shard: str, lanes: Sequence[Queue], worker: str, cluster: bool) -> ShardKeys:
        """Shard `shard` (lanes `lanes`) as worker `worker` serves it, on a Redis Cluster or not."""
        held = held_key(worker, shard)
        return cls(
            shard,
            tuple(lanes),
            doorbell=doorbell_key(shard),
            bell=bell_key(shard, worker),
            held=held,
            idle=idle_key(shard),
            waiters=waiters_key(shard),
            suspended=WORKERS_SUSPENDED + hash_tag(shard) if cluster else WORKERS_SUSPENDED,
            worker=held if cluster else SimpleWorker.redis_worker_namespace_prefix + worker,
            facts=held if cluster else worker_key(worker),
        )

    @property
    def on_cluster(self) -> bool:
        return self.worker == self.held


@dataclass(frozen=True)
class TakenPass:
    """A pass's jobs, all started, from one lane's queue of one shard."""

    queue: Queue
    jobs: list[Job]
    execution_id: str
    started: float  # unix s
    shard: ShardKeys


@dataclass(frozen=True)
class Done:
    """One job of a pass that succeeded: what rq keeps as its return value, embedq's packed
    result, and its counts (texts, tokens, truncated)."""

    job: Job
    return_value: Any
    packed: bytes
    counts: tuple[int, int, int]


class PassWorker(SimpleWorker):
    """rq's SimpleWorker (every job in this process) whose loop takes jobs a pass at a time, from
    several lanes in the order `next_lanes` gives, and writes rq's records of a whole pass in one
    script when it starts and one when it succeeds. It serves every shard of its queue: its home shard
    (the first) first; whenever that is empty, the others whose doorbell rings. Idle, it blocks on its
    home shard's doorbell of its own (a producer rings the worker that went idle last) and shared one, and
    on the other shards' shared ones (on a Redis Cluster through a DoorbellWatch's threads, one blocking
    read per slot). Subclasses fill in the hooks below."""

    death_penalty_class = NamedTimeoutPenalty
    max_connection_wait_time = 10.0  # rq's backoff cap while Redis is away (its default: 60 s)
    permanent_failures: tuple[type[BaseException], ...] = ()  # failures that would fail the same way again
    doorbell_wait = DOORBELL_WAIT  # s; an idle worker also looks on its own (jobs rq itself enqueues ring no bell)
    heartbeat_every = 15.0
    extra_fields: tuple[str, ...] = ()  # job hash fields beyond rq's a pass reads: each taken job's `extras`

    def __init__(
        self,
        shards: Sequence[ShardKeys],
        *,
        max_jobs: int = 1,
        max_texts: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__([lane for shard in shards for lane in shard.lanes], **kwargs)
        self.shards = list(shards)  # the home shard first
        self.home = self.shards[0]
        self.max_jobs = max_jobs  # the most jobs, and texts, one pass takes
        self.max_texts = max_texts
        self._take = bind(self.connection, "take_pass")
        self._lane_keys_cache: dict[tuple[str, ...], list[str]] = {}
        self._registry_keys_cache: dict[str, tuple[str, str]] = {}
        self._finish = bind(self.connection, "finish_pass")
        self._release = bind(self.connection, "release_jobs")
        self._last_beat = 0.0
        self._redis_failed = False  # the loop ended on a Redis error: its clean-up would wait on Redis too
        self._was_idle = True  # the last look found nothing (rq's state says "started" before the first)
        self._blank_job = self.job_class(connection=self.connection, serializer=self.serializer)  # copied per job
        self._watch: DoorbellWatch | None = None  # on a Cluster, of the other shards' doorbells (started idle)

    # hooks
    def execute_pass(self, taken: TakenPass) -> None:
        """Run the pass's jobs to the end: `finish_pass` for those that succeed, `fail_job` for the others."""
        raise NotImplementedError

    def next_lanes(self, shard: ShardKeys) -> list[Queue]:
        """The shard's lanes to take the next pass from, first choice first."""
        return list(shard.lanes)

    def on_birth(self) -> None:
        """Called once rq has registered this worker."""

    def on_heartbeat(self, target: Redis | Pipeline, timeout: int | None) -> None:
        """Called with every rq heartbeat (a pipeline when rq sends one)."""

    def on_death(self) -> None:
        """Called once rq has removed this worker's record."""

    def on_job_failure(self, job: Job) -> None:
        """Called for every failed attempt, before rq records it."""

    def on_loop(self) -> None:
        """Called before every look for work (at least once a second while idle)."""

    def on_stop_request(self) -> None:
        """Called from rq's SIGTERM / SIGINT handler, before rq's own warm-stop handling."""

    # the loop
    def work(self, burst: bool = False, logging_level: str | None = None, **_: Any) -> bool:  # type: ignore[override]
        """Serve passes until a warm stop (SIGTERM: the pass in hand is finished first), or, in a
        burst, until every lane is empty. Whether any pass ran."""
        self.bootstrap(logging_level or "INFO")
        self._install_signal_handlers()  # type: ignore[no-untyped-call]
        worked = idle = False  # idle: the last look found nothing, so the next one waits for the doorbell
        try:
            while not self._stop_requested:
                self.keep_alive()
                # From here a SIGTERM waits for the pass to end; idle, for the doorbell's wait too (at most
                # doorbell_wait): the take behind it may already have started jobs, which then run first.
                self._state = WorkerStatus.BUSY
                home = self.home
                taken = self.wait_and_take(self.next_lanes(home)) if idle else self.take(home, self.next_lanes(home))
                idle = taken is None
                if isinstance(taken, TakenPass):
                    self.execute_pass(taken)
                    worked = True
                elif taken == "suspended":
                    self._state = WorkerStatus.IDLE
                    self.check_for_suspension(burst)
                elif burst:
                    break
        except StopRequested:  # rq's signal handler, while suspended
            self._stop_requested = True
        except RedisError:
            self._redis_failed = True
            raise
        except Exception:
            self.log.exception("Worker %s: unhandled exception, quitting", self.name)
        finally:
            self.teardown()
        return worked

    def take(
        self, shard: ShardKeys, lanes: Sequence[Queue], *, looking_in_passing: bool = False
    ) -> TakenPass | str | None:
        """Take the next pass's jobs from `shard`'s `lanes` (one script): a TakenPass, None when every lane
        is empty, or "suspended" while `rq suspend` is in force. `looking_in_passing`: a look between the
        micro-batches of another pass, or in a shard other than home, which leaves the worker's state and
        the doorbell alone."""
        execution_id = uuid4().hex
        keys, args = self._take_call(shard, lanes, execution_id, looking_in_passing)
        return self._taken(shard, lanes, execution_id, self._take(keys, args), looking_in_passing)

    def take_from(self, shard: ShardKeys) -> TakenPass | str | None:
        """A pass from another shard than home (in passing); home's idle sets forget this worker while it
        runs that pass."""
        taken = self.take(shard, self.next_lanes(shard), looking_in_passing=True)
        if isinstance(taken, TakenPass):
            with self.connection.pipeline(transaction=False) as pipe:
                pipe.zrem(self.home.idle, self.name)
                pipe.zrem(self.home.waiters, self.name)
                pipe.execute()
            self._was_idle = False
        return taken

    def take_elsewhere(self) -> TakenPass | str | None:
        """A pass from the first other shard with work, each looked at in turn: after an idle wait no
        doorbell cut short (a safety net: jobs rq itself enqueues ring none)."""
        for shard in self.shards[1:]:
            if (taken := self.take_from(shard)) is not None:
                return taken
        return None

    def wait_and_take(self, lanes: Sequence[Queue]) -> TakenPass | str | None:
        """Idle: block on the doorbells for up to `doorbell_wait` (home's own and shared ones, and the other
        shards' shared ones: a shard whose workers are all busy, or that is nobody's home, rings there
        while work waits), with home's take sent behind the blocking read in the same round trip: Redis
        runs it the moment a bell rings (or the wait ends), so a woken worker holds its pass one round trip
        sooner. A ring from another shard: a pass from there; no ring at all: every other shard looked at.
        On a Cluster the other shards' doorbells are watched by threads meanwhile (broker/doorbells.py).
        Jobs are started in Redis before this worker reads the reply, so nothing may cut the read short: a
        stop request waits for it."""
        if (heard := self._take_rung()) is not None:  # rings a watch heard while this worker was busy
            return heard
        execution_id, home = uuid4().hex, self.home
        bells = [home.bell, home.doorbell]
        others = [shard.doorbell for shard in self.shards[1:]]
        if home.on_cluster and others and self._watch is None:  # one slot per blocking read: threads watch those
            self._watch = DoorbellWatch(self.connection, home.bell, others, self.doorbell_wait)
        elif not home.on_cluster:
            bells += others
        keys, args = self._take_call(home, lanes, execution_id, looking_in_passing=False)
        TAKE_PASS.check(keys, args)
        with self._watch.waiting() if self._watch else nullcontext():
            rang, reply = execute(
                self.connection,
                [
                    (("BLPOP", *bells, self.doorbell_wait), {}),
                    (("EVALSHA", TAKE_PASS.sha, len(keys), *keys, *args), {}),
                ],
            )
        if isinstance(reply, NoScriptError):  # Redis lost its scripts (a restart, SCRIPT FLUSH)
            self.connection.script_load(TAKE_PASS.source)
            return None
        for error in (rang, reply):
            if isinstance(error, Exception):
                raise error
        taken = self._taken(home, lanes, execution_id, reply, looking_in_passing=False)
        if taken is not None or len(self.shards) == 1:
            return taken
        if (heard := self._take_rung()) is not None:
            return heard
        if rang is None:
            return self.take_elsewhere()
        rung = rang[0].decode()
        return next((self.take_from(shard) for shard in self.shards[1:] if shard.doorbell == rung), None)

    def _take_rung(self) -> TakenPass | str | None:
        """A pass from the shards whose doorbells the watch heard ring (on a Cluster), first ring first, until one
        has work; the rings after it stay noted for the next look."""
        while self._watch and (rung := self._watch.next_ring()) is not None:
            shard = next(shard for shard in self.shards[1:] if shard.doorbell == rung)
            if (taken := self.take_from(shard)) is not None:
                return taken
        return None

    def _take_call(
        self, shard: ShardKeys, lanes: Sequence[Queue], execution_id: str, looking_in_passing: bool
    ) -> tuple[list[str], list[Any]]:
        """take_pass.lua's keys and arguments."""
        keys = [shard.doorbell, shard.suspended, shard.held, shard.worker, shard.idle, shard.waiters, shard.bell]
        keys += self._lane_keys(lanes)
        args = [
            self.max_jobs,
            self.max_texts,
            execution_id,
            self.name,
            Job.redis_job_namespace_prefix,
            Queue.DEFAULT_TIMEOUT,
            int(looking_in_passing),
            IDLE_FOR,
            int(self._was_idle and shard is self.home),
            self.stored_data_limit,
            OVERSIZED,
            int(len(self.shards) > 1),
            *PASS_FIELDS,
            *self.extra_fields,
        ]
        return keys, args

    def _lane_keys(self, lanes: Sequence[Queue]) -> list[str]:
        """Per lane, its rq list and its started registry (kept: rq builds a registry object to name its key)."""
        names = tuple(queue.name for queue in lanes)
        if (keys := self._lane_keys_cache.get(names)) is None:
            keys = [key for queue in lanes for key in (queue.key, queue.started_job_registry.key)]
            self._lane_keys_cache[names] = keys
        return keys

    def _registry_keys(self, queue: Queue) -> tuple[str, str]:
        """A lane's started and finished registries' keys (kept: rq builds a registry object to name its key)."""
        if (keys := self._registry_keys_cache.get(queue.name)) is None:
            keys = self._registry_keys_cache[queue.name] = (
                queue.started_job_registry.key,
                queue.finished_job_registry.key,
            )
        return keys

    def _taken(
        self, shard: ShardKeys, lanes: Sequence[Queue], execution_id: str, reply: Any, looking_in_passing: bool
    ) -> TakenPass | str | None:
        started = time.time()
        outcome = reply[0].decode()
        if not looking_in_passing:
            self._was_idle = outcome != "jobs"
        if outcome != "jobs":
            return outcome if outcome == "suspended" else None
        jobs = []
        for job_id, values in zip(reply[2::2], reply[3::2]):
            job = restored(
                self._blank_job, job_id.decode(), {n: v for n, v in zip(PASS_FIELDS, values) if v is not None}
            )
            job.extras = dict(zip(self.extra_fields, values[len(PASS_FIELDS) :]))  # type: ignore[attr-defined]
            jobs.append(job)
        return TakenPass(lanes[int(reply[1]) - 1], jobs, execution_id, started, shard)

    def finish_pass(
        self,
        taken: TakenPass,
        done: Sequence[Done],
        *,
        lane: str,
        result_ttl: int,
        facts_ttl: int,
        metrics: str,
        timings: str,
        histogram: Mapping[str, float],
        cache: CacheWrites,
    ) -> int:
        """Record the successes of a pass (one script); how many were written. A job's own
        result_ttl wins over `result_ttl`. `metrics`, `timings`: embedq's hashes of the queue (and
        the shard's `facts` of this worker), updated once for the pass; `histogram`: what to add to `timings`
        (int counts, float sums ending in `:sum`); `cache`: the entries the pass computed, to store."""
        if not done:
            return 0
        ended = time.time()
        job_keys: list[str] = []
        args: list[Any] = [
            self.name,
            taken.execution_id,
            utcformat(now()),
            repr(ended),
            repr(taken.started),
            facts_ttl,
            lane,
            len(done),
            f"{ended - taken.started:.6f}",
            len(histogram),
            *cache.args(),
        ]
        for item in done:
            ttl = item.job.result_ttl or result_ttl
            job_keys += [item.job.key, result_stream_key(item.job.id)]
            args += [
                item.job.id,
                ttl,
                repr(ended + ttl),
                b64encode(self.serializer.dumps(item.return_value)),
                item.packed,
                *item.counts,
            ]
        for field, value in histogram.items():
            args += [field, str(value) if isinstance(value, int) else f"{value:.3f}"]
        args += cache.pairs()
        fixed = [
            taken.shard.held,
            taken.shard.worker,
            taken.shard.facts,
            metrics,
            timings,
            *self._registry_keys(taken.queue),
            cache.stats,
            cache.index,
        ]
        return int(self._finish(fixed + job_keys, args))

    @property
    def stored_data_limit(self) -> int:
        """The most bytes of a job's stored (compressed) data a taken fetches: its decompressed limit, and
        zlib's worst-case growth on data that does not compress."""
        limit = int(getattr(self.job_class, "data_limit", 2**62))
        return limit + limit // 100 + 1024

    def fail_job(self, job: Job, taken: TakenPass, exc_info: Any) -> None:
        """rq's own failure path for one job of a pass: retried while it has retries left (and the
        failure is not permanent), else failed with the reason. rq saves the whole job, so it is read
        whole (but for data too large to fetch, which rq's save then replaces with the OVERSIZED mark)."""
        job = self._whole(job)
        job.ended_at = now()
        self.handle_exception(job, *exc_info)
        execution = Execution(taken.execution_id, job.id, connection=self.connection, worker_name=self.name)
        self.handle_job_failure(
            job, taken.queue, exc_string="".join(traceback.format_exception(*exc_info)), execution=execution
        )
        self.connection.srem(taken.shard.held, f"{job.id}:{taken.execution_id}")

    def _whole(self, job: Job) -> Job:
        """The job with every field, for rq's failure path. Data over the limit (refused unread, or
        inflated no further) is not fetched or inflated again: rq's save stores the OVERSIZED mark."""
        data = job.data
        if not data.startswith(OVERSIZED) and len(data) <= self.stored_data_limit:
            return self.job_class.fetch(job.id, connection=self.connection, serializer=self.serializer)
        if not data.startswith(OVERSIZED):
            data = OVERSIZED + str(len(data)).encode() + b"+"  # at least this many bytes once inflated
        names = [name for name in self.connection.hkeys(job.key) if name != b"data"]
        whole = self.job_class(job.id, connection=self.connection, serializer=self.serializer)
        whole.restore({**dict(zip(names, self.connection.hmget(job.key, names))), b"data": data})
        return whole

    def release(self, taken: TakenPass, jobs: Sequence[Job]) -> None:
        """Put the jobs of a pass that this worker still holds back at the head of their queue,
        started by no one and with no retry used, and ring for them (one script)."""
        members = [f"{job.id}:{taken.execution_id}" for job in jobs]
        keys = [taken.queue.key, taken.queue.started_job_registry.key, taken.shard.held, taken.shard.doorbell]
        self._release(keys + [job.key for job in jobs], [self.name, *members])

    def keep_alive(self) -> None:
        """rq's heartbeat (and embedq's) and registry maintenance, when due; `on_loop` every time."""
        self.on_loop()
        if time.monotonic() - self._last_beat >= self.heartbeat_every:
            with self.connection.pipeline() as pipe:
                self.heartbeat(pipeline=pipe)
                pipe.execute()
            self._last_beat = time.monotonic()
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()  # type: ignore[no-untyped-call]

    @property
    def stop_requested(self) -> bool:
        """A warm shutdown was asked for (SIGTERM, or `stop_after_this_pass`)."""
        return bool(self._stop_requested)

    def stop_after_this_pass(self) -> None:
        """A warm shutdown from within: the loop ends once the pass in hand is recorded."""
        self._stop_requested = True

    # rq's methods
    @property
    def connection_timeout(self) -> int:
        """rq raises the connection's socket timeout to at least this (its own dequeue blocks for half a
        minute); this loop's longest blocking read is the doorbell wait, so the caller's timeout stands."""
        return int(self.doorbell_wait)

    def _set_connection(self, connection: Redis) -> Redis:
        """rq raises the socket timeout of its client's pool; a Cluster client has a pool per node (made
        with the caller's timeouts, which stand here anyway: see connection_timeout)."""
        return super()._set_connection(connection) if isinstance(connection, Redis) else connection

    def register_birth(self) -> None:
        super().register_birth()  # type: ignore[no-untyped-call]
        self.on_birth()

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        super().heartbeat(timeout, pipeline)
        self.on_heartbeat(pipeline if pipeline is not None else self.connection, timeout)

    def request_stop(self, signum: int, frame: Any) -> None:
        self.on_stop_request()
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def register_death(self) -> None:
        super().register_death()  # type: ignore[no-untyped-call]
        with self.connection.pipeline(transaction=False) as pipe:  # no longer waiting: ring others, not it
            for shard in self.shards:
                pipe.zrem(shard.idle, self.name)
                pipe.zrem(shard.waiters, self.name)
                pipe.delete(shard.bell)
            pipe.execute()
        self.on_death()

    def set_shutdown_requested_date(self) -> None:
        """rq writes the date into the worker's record from inside its signal handler: a Redis that hangs
        would hold the stop for a call's timeout. The record goes at teardown anyway; keep it local."""

    def teardown(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        if self._redis_failed:  # Redis just failed a call: the record expires by itself, the supervisor buries it
            self._stop_pubsub()
            return
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except RedisError:
            self._stop_pubsub()  # rq's teardown stopped at the first Redis call: else every outage leaks a thread
            raise

    def _stop_pubsub(self) -> None:
        if self.pubsub_thread:
            self.pubsub_thread.stop()
            self.pubsub_thread.join(timeout=1)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """rq's version, less the job's arguments (a user's texts) in the log record."""
        if isinstance(exc_info[1], self.permanent_failures) and isinstance(job, GuardedJob):
            job.permanent_failure = True
        self.log.error("Worker %s: job %s failed", self.name, job.id, exc_info=tuple(exc_info))
        call_exception_handlers(self._exc_handlers, job, *exc_info)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: Any = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        self.on_job_failure(job)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
