"""One worker process: load the Encoder once, warm it up, then let rq's SimpleWorker loop run
every job in this process, so the session stays loaded for the life of the process."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timezone

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.worker import WorkerStatus
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from embedq.config import Settings
from embedq.producer.errors import InvalidInput
from embedq.producer.protocol import METRICS_KEY, WORKER_FACTS_TTL, MsgpackSerializer, claimed_key, model_key, worker_key
from embedq.worker import tasks
from embedq.worker.model.encoder import Encoder
from embedq.worker.recovery import bury_worker
from embedq.worker.local.redis_server import redis_answers

log = logging.getLogger(__name__)

# rq heartbeats an idle worker every WORKER_TTL - 15 s; a short TTL keeps `embedq stats` current.
WORKER_TTL = 45


def default_worker_name() -> str:
    """host.pid: unique per process, and the supervisor can tell a child's name from its pid."""
    return worker_name_for(os.getpid())


def worker_name_for(pid: int) -> str:
    return f"{socket.gethostname()}.{pid}"


class JobTimeoutPenalty(UnixSignalDeathPenalty):
    """rq's SIGALRM timeout, with a reason that names the setting. Python runs the handler between
    bytecodes, so a job is stopped after the inference micro-batch it is in."""

    def handle_death_penalty(self, signum, frame):  # type: ignore[no-untyped-def]
        raise self._exception(f"job ran past JOB_TIMEOUT={self._timeout} s and was stopped")


# Failures that would fail again the same way: no retry.
PERMANENT_FAILURES = (InvalidInput, tasks.ForbiddenTask, JobTimeoutException)


CLAIM_SCRIPT = """
local ids = redis.call('LPOP', KEYS[1], ARGV[1])
if ids then
    for _, id in ipairs(ids) do redis.call('SADD', KEYS[2], id) end
    redis.call('EXPIRE', KEYS[2], 86400)
end
return ids
"""


class EmbedWorker(SimpleWorker):
    """rq's SimpleWorker plus the facts `embedq stats` shows, kept alive by rq's heartbeat."""

    death_penalty_class = JobTimeoutPenalty
    max_connection_wait_time = 10.0  # rq's backoff cap while Redis is away (its default: 60 s)

    def __init__(self, *args, facts: dict[str, str], coalesce_jobs: int = 1, coalesce_texts: int = 1,  # type: ignore[no-untyped-def]
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.facts = facts
        self.coalesce_jobs = coalesce_jobs
        self.coalesce_texts = coalesce_texts
        self._claim = self.connection.register_script(CLAIM_SCRIPT)
        self._prepared: set[str] = set()

    def execute_job(self, job, queue):  # type: ignore[no-untyped-def]
        """Take what else is waiting (up to COALESCE_JOBS jobs / COALESCE_TEXTS texts), embed all
        of it in one pass, then run each job through rq on its own: own status, result, retries.
        A job that already killed a worker (abandoned before) runs alone."""
        if not _coalescable(job):
            return super().execute_job(job, queue)
        batch = [self._start(job, queue)]
        claimed = claimed_key(self.name)
        wanted = self.coalesce_jobs - 1
        texts = _text_count(job)
        while wanted > 0 and texts < self.coalesce_texts:
            # LPOP + SADD in one script: a job taken here is always either in the queue or in our
            # claimed set, so the supervisor can hand it back if this process dies at any point.
            ids = self._claim(keys=[queue.key, claimed], args=[min(wanted, 8)])
            if not ids:
                break
            for found in self.job_class.fetch_many([i.decode() for i in ids], self.connection, self.serializer):
                if found is not None:
                    batch.append(self._start(found, queue))
                    texts += _text_count(found)
            wanted = self.coalesce_jobs - len(batch)
        tasks.precompute([j for j, _, _ in batch if _coalescable(j)])
        try:
            # jobs abandoned before run last, on their own vectors: they cannot take their neighbours down again
            for j, q, execution in sorted(batch, key=lambda item: not _coalescable(item[0])):
                self.perform_job(j, q, execution)
        finally:
            tasks.forget_precomputed()
            self.connection.delete(claimed)
        self.set_state(WorkerStatus.IDLE)

    def _start(self, job, queue):  # type: ignore[no-untyped-def]
        """Register the execution and mark the job started at once, before the shared pass: if this
        process dies in it, every job of the batch is handed back as abandoned."""
        execution = self.prepare_execution(job)
        super().prepare_job_execution(job, remove_from_intermediate_queue=len(self.queues) == 1)
        self._prepared.add(job.id)
        return job, queue, execution

    def prepare_job_execution(self, job, remove_from_intermediate_queue=False):  # type: ignore[no-untyped-def]
        if job.id in self._prepared:  # started already by _start; rq would do the same writes again
            self._prepared.discard(job.id)
            return
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    def register_birth(self) -> None:
        super().register_birth()
        key = worker_key(self.name)
        with self.connection.pipeline() as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={**self.facts, "jobs_done": 0})
            pipe.expire(key, WORKER_FACTS_TTL)
            for queue in self.queues:
                pipe.hset(model_key(queue.name), mapping={"name": self.facts["model"], "dim": self.facts["dim"]})
            pipe.execute()

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:  # type: ignore[no-untyped-def]
        super().heartbeat(timeout, pipeline)
        target = pipeline if pipeline is not None else self.connection
        target.expire(worker_key(self.name), max(WORKER_FACTS_TTL, timeout or 0))

    def teardown(self) -> None:
        try:
            super().teardown()
        except RedisError:
            # rq's teardown stopped at the first Redis call: stop its pubsub thread, or every outage leaks one.
            if self.pubsub_thread:
                self.pubsub_thread.stop()
                self.pubsub_thread.join(timeout=1)
            raise

    def register_death(self) -> None:
        super().register_death()
        self.connection.delete(worker_key(self.name))

    def handle_exception(self, job, *exc_info):  # type: ignore[no-untyped-def]
        if isinstance(exc_info[1], PERMANENT_FAILURES):
            job.retries_left = 0
        super().handle_exception(job, *exc_info)

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):  # type: ignore[no-untyped-def]
        try:
            self.connection.hincrby(METRICS_KEY, "failed_attempts", 1)
        except RedisError:
            pass  # rq's own failure bookkeeping below logs the outage
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)


def wait_for_redis(connection: Redis, name: str, max_wait: float = 10.0) -> None:
    """Block until Redis answers, retrying with exponential backoff (0.5 s doubling to max_wait)."""
    delay = 0.5
    while True:
        try:
            connection.ping()
            return
        except RedisError as error:
            log.error("worker %s: Redis unreachable (%s); retrying in %.1f s", name, error, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_wait)


def _coalescable(job: tasks.EmbedJob) -> bool:
    return not job.meta.get("abandoned")


def _text_count(job: tasks.EmbedJob) -> int:
    payload = job.args[0] if job.args else None
    texts = payload.get("texts") if isinstance(payload, dict) else None
    return len(texts) if isinstance(texts, list) else 1


def run_worker(settings: Settings, *, name: str | None = None, burst: bool = False) -> bool:
    """Load the model, warm it up, then serve jobs until stopped (SIGTERM: finish the job, exit).

    Losing Redis does not end the process: it waits for Redis to return, hands back the job it was
    running, and serves again. Returns False when rq's loop ended on an error other than that."""
    name = name or default_worker_name()
    started = time.perf_counter()
    encoder = Encoder.from_settings(settings)
    encoder.encode(["warm-up"])  # the first run optimizes the graph and allocates; keep that off the first job
    load_s = time.perf_counter() - started
    threads = settings.threads_per_worker()
    log.info(
        "worker %s: %s (dim %d, max %d tokens, %s pooling) ready in %.1f s on %s, %d intra-op threads",
        name, encoder.spec.name, encoder.dim, encoder.max_length, encoder.pooling, load_s,
        ",".join(encoder.providers), threads,
    )
    connection = Redis.from_url(settings.redis_url, socket_connect_timeout=5, health_check_interval=30)
    facts = {
        "pid": str(os.getpid()),
        "host": socket.gethostname(),
        "model": encoder.spec.name,
        "dim": str(encoder.dim),
        "providers": ",".join(encoder.providers),
        "threads": str(threads),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_seconds": f"{load_s:.2f}",
    }
    tasks.install(tasks.TaskContext(encoder, settings, connection, name))
    while True:
        wait_for_redis(connection, name)
        try:
            # A previous life of this process (Redis lost mid-job) may have left a job and a record behind.
            bury_worker(connection, name, "its worker lost Redis")
            worker = EmbedWorker(
                [Queue(settings.queue, connection=connection, serializer=MsgpackSerializer)],
                connection=connection,
                name=name,
                serializer=MsgpackSerializer,
                job_class=tasks.EmbedJob,
                worker_ttl=WORKER_TTL,
                facts=facts,
                coalesce_jobs=settings.coalesce_jobs,
                coalesce_texts=settings.coalesce_texts,
            )
            worker.work(burst=burst, logging_level=settings.log_level)
        except RedisError as error:
            log.error("worker %s: lost Redis (%s); will reconnect", name, error)
            continue
        if worker._stop_requested or burst:  # rq's flag for a requested (warm) shutdown
            return True
        if redis_answers(connection):
            return False
        log.error("worker %s: rq's loop ended after losing Redis; will reconnect", name)
