"""One worker process: load the Encoder once, warm it up, then let rq's SimpleWorker loop run
every job in this process, so the session stays loaded for the life of the process."""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job
from rq.timeouts import JobTimeoutException

from embedq.config import Settings
from embedq.producer.errors import InvalidInput
from embedq.producer.protocol import (
    WORKER_FACTS_TTL,
    MsgpackSerializer,
    claimed_key,
    metrics_key,
    model_key,
    worker_key,
)
from embedq.producer.rq_compat import PassWorker
from embedq.worker import tasks
from embedq.worker.local.redis_server import redis_answers
from embedq.worker.model.encoder import Encoder
from embedq.worker.recovery import bury_worker

log = logging.getLogger(__name__)

# rq heartbeats an idle worker every WORKER_TTL - 15 s; a short TTL keeps `embedq stats` current.
WORKER_TTL = 45


def default_worker_name() -> str:
    """host.pid: unique per process, and the supervisor can tell a child's name from its pid."""
    return worker_name_for(os.getpid())


def worker_name_for(pid: int) -> str:
    return f"{socket.gethostname()}.{pid}"


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


class EmbedWorker(PassWorker):
    """rq's SimpleWorker with coalesced passes, plus the facts `embedq stats` shows, kept alive by rq's heartbeat."""

    permanent_failures = PERMANENT_FAILURES

    def __init__(
        self,
        *args: Any,
        facts: dict[str, str],
        coalesce_jobs: int = 1,
        coalesce_texts: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.facts = facts
        self.coalesce_jobs = coalesce_jobs
        self.coalesce_texts = coalesce_texts
        self._claim = self.connection.register_script(CLAIM_SCRIPT)

    def execute_pass(self, job: Job, queue: Queue) -> None:
        """Take what else is waiting (up to COALESCE_JOBS jobs / COALESCE_TEXTS texts), embed all
        of it in one pass, then run each job through rq on its own: own status, result, retries.
        A job that already killed a worker (abandoned before) runs alone."""
        if not _coalescable(job):
            return self.run_alone(job, queue)
        batch = [(job, queue, self.start_job(job, queue))]
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
                    batch.append((found, queue, self.start_job(found, queue)))
                    texts += _text_count(found)
            wanted = self.coalesce_jobs - len(batch)
        tasks.precompute([j for j, _, _ in batch if _coalescable(j)])
        try:
            # jobs abandoned before run last, on their own vectors: they cannot take their neighbours down again
            for j, q, execution in sorted(batch, key=lambda item: not _coalescable(item[0])):
                self.run_started_job(j, q, execution)
        finally:
            tasks.forget_precomputed()
            self.connection.delete(claimed)
        self.mark_idle()

    def on_birth(self) -> None:
        key = worker_key(self.name)
        fields: dict[Any, Any] = {**self.facts, "jobs_done": 0}  # redis-py's Mapping type is invariant in its keys
        with self.connection.pipeline() as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, WORKER_FACTS_TTL)
            for queue in self.queues:
                pipe.hset(model_key(queue.name), mapping={"name": self.facts["model"], "dim": self.facts["dim"]})
            pipe.execute()

    def on_heartbeat(self, target: Redis | Pipeline, timeout: int | None) -> None:
        target.expire(worker_key(self.name), max(WORKER_FACTS_TTL, timeout or 0))

    def on_death(self) -> None:
        self.connection.delete(worker_key(self.name))

    def on_job_failure(self, job: Job) -> None:
        with suppress(RedisError):  # rq's own failure bookkeeping after this logs the outage
            self.connection.hincrby(metrics_key(job.origin), "failed_attempts", 1)


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


def _coalescable(job: Job) -> bool:
    return not job.meta.get("abandoned")


def _text_count(job: Job) -> int:
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
        name,
        encoder.spec.name,
        encoder.dim,
        encoder.max_length,
        encoder.pooling,
        load_s,
        ",".join(encoder.providers),
        threads,
    )
    connection = Redis.from_url(settings.redis_url, socket_connect_timeout=5, health_check_interval=30)
    facts = {
        "pid": str(os.getpid()),
        "queue": settings.queue,
        "host": socket.gethostname(),
        "model": encoder.spec.name,
        "dim": str(encoder.dim),
        "providers": ",".join(encoder.providers),
        "threads": str(threads),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
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
        if worker.stop_requested or burst:
            return True
        if redis_answers(connection):
            return False
        log.error("worker %s: rq's loop ended after losing Redis; will reconnect", name)
