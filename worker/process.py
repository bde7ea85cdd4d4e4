"""One worker process: load the Encoder once, warm it up, then let rq's SimpleWorker loop run
every job in this process, so the session stays loaded for the life of the process."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timezone

from redis import Redis
from rq import Queue, SimpleWorker

from config import Settings
from producer.protocol import METRICS_KEY, WORKER_FACTS_TTL, MsgpackSerializer, worker_key
from worker import tasks
from worker.encoder import Encoder

log = logging.getLogger(__name__)

# rq heartbeats an idle worker every WORKER_TTL - 15 s; a short TTL keeps `embedq stats` current.
WORKER_TTL = 45


def default_worker_name() -> str:
    """host.pid: unique per process, and the supervisor can tell a child's name from its pid."""
    return worker_name_for(os.getpid())


def worker_name_for(pid: int) -> str:
    return f"{socket.gethostname()}.{pid}"


class EmbedWorker(SimpleWorker):
    """rq's SimpleWorker plus the facts `embedq stats` shows, kept alive by rq's heartbeat."""

    def __init__(self, *args, facts: dict[str, str], **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.facts = facts

    def register_birth(self) -> None:
        super().register_birth()
        key = worker_key(self.name)
        with self.connection.pipeline() as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping={**self.facts, "jobs_done": 0})
            pipe.expire(key, WORKER_FACTS_TTL)
            pipe.execute()

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:  # type: ignore[no-untyped-def]
        super().heartbeat(timeout, pipeline)
        target = pipeline if pipeline is not None else self.connection
        target.expire(worker_key(self.name), max(WORKER_FACTS_TTL, timeout or 0))

    def register_death(self) -> None:
        super().register_death()
        self.connection.delete(worker_key(self.name))

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):  # type: ignore[no-untyped-def]
        self.connection.hincrby(METRICS_KEY, "failed_attempts", 1)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)


def run_worker(settings: Settings, *, name: str | None = None, burst: bool = False) -> bool:
    """Load the model, warm it up, then serve jobs until stopped (SIGTERM: finish the job, exit)."""
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
    worker = EmbedWorker(
        [Queue(settings.queue, connection=connection, serializer=MsgpackSerializer)],
        connection=connection,
        name=name,
        serializer=MsgpackSerializer,
        job_class=tasks.EmbedJob,
        worker_ttl=WORKER_TTL,
        facts=facts,
    )
    tasks.install(tasks.TaskContext(encoder, settings, connection, name))
    return worker.work(burst=burst, logging_level="INFO")
