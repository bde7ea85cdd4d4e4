"""Handing back what a dead worker held, as rq itself does for one job: a retry, or a failure with the
reason, out of the started registry; and its rq record removed."""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.job_lifecycle import record_job_failure
from rq.registry import StartedJobRegistry


def retry(job: Job, queue: Queue, pipe: Pipeline) -> None:
    """Re-queue with one retry used, as rq does after a failed attempt."""
    job.retry(queue, pipe)


def fail(job: Job, reason: str, pipe: Pipeline) -> None:
    """Fail a job no worker is running (status, failed registry, failure result), as rq does for abandoned jobs."""
    record_job_failure(job, reason, pipe)


def leave_started(job: Job, execution_id: str, pipe: Pipeline) -> None:
    """Take a job's execution out of its queue's started registry."""
    pipe.zrem(StartedJobRegistry(job.origin, connection=job.connection).key, f"{job.id}:{execution_id}")


class WorkerRecord(SimpleWorker):
    """rq's record of another process's worker, read and ended by rq's own code, on any client (rq would
    raise the socket timeout of the client's pool, which a Cluster client has one of per node)."""

    def _set_connection(self, connection: Redis) -> Redis:
        return connection


def remove_worker_record(connection: Redis, worker_name: str) -> None:
    """Drop a dead worker's rq record, as if it had shut down."""
    dead = WorkerRecord.find_by_key(WorkerRecord.redis_worker_namespace_prefix + worker_name, connection=connection)
    if dead is not None:
        dead.register_death()  # type: ignore[no-untyped-call]
