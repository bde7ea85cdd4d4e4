"""Hand back the jobs of a worker that died, at once instead of after rq's heartbeat expiry
(~80 s): each is re-queued while it has retries left, else failed with the reason. rq's own
machinery does the bookkeeping, reached through rq_compat."""

from __future__ import annotations

import logging

from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus

from embedq.producer import rq_compat
from embedq.producer.protocol import MsgpackSerializer, claimed_key, worker_key
from embedq.worker.tasks import EmbedJob

log = logging.getLogger(__name__)


def back_to_front(queue: Queue, job_id: str, pipe: Pipeline | None = None) -> bool:
    """Put a job id back at the head of its queue, unless the queue holds it already; whether it did."""
    if queue.connection.lpos(queue.key, job_id) is not None:
        return False
    rq_compat.push_to_front(queue, job_id, pipe)
    return True


def recover_jobs(connection: Redis, worker_name: str, cause: str) -> list[str]:
    """Re-queue (or fail, when out of retries) every job `worker_name` was running; their ids."""
    recovered = []
    for job_id, execution_id in rq_compat.executions_of(connection, worker_name):
        try:
            job = EmbedJob.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
        except NoSuchJobError:
            rq_compat.forget_execution(connection, worker_name, job_id, execution_id)
            continue
        status = job.get_status(refresh=False)
        if status not in (JobStatus.STARTED, JobStatus.QUEUED):
            rq_compat.forget_execution(connection, worker_name, job_id, execution_id)
            continue
        queue = Queue(job.origin, connection=connection, serializer=MsgpackSerializer, job_class=EmbedJob)
        with connection.pipeline() as pipe:
            rq_compat.end_execution(job, execution_id, worker_name, queue, pipe)
            if status == JobStatus.QUEUED:  # dequeued, never started: back to the front, no retry used
                back_to_front(queue, job_id, pipe)
                outcome = "never started; back in the queue"
            else:
                abandoned = int(job.meta.get("abandoned", 0)) + 1
                job.meta["abandoned"] = abandoned
                pipe.hset(job.key, "meta", MsgpackSerializer.dumps(job.meta))
                if job.retries_left:
                    rq_compat.retry(job, queue, pipe)
                    outcome = f"re-queued ({job.retries_left} retries left)"
                else:
                    rq_compat.fail(
                        job,
                        f"AbandonedJobError: job abandoned {abandoned} times: its worker died each time "
                        f"(last: {worker_name}, {cause}); no retries left",
                        pipe,
                    )
                    outcome = "failed: no retries left"
            pipe.execute()
        log.warning("job %s of dead worker %s (%s): %s", job_id, worker_name, cause, outcome)
        recovered.append(job_id)
    return recovered


def return_claimed(connection: Redis, worker_name: str) -> list[str]:
    """Jobs a coalescing worker took off the queue but had not started when it died: back to the front."""
    returned = []
    members: set[bytes] = connection.smembers(claimed_key(worker_name))  # type: ignore[assignment]
    for member in members:
        job_id = member.decode()
        try:
            job = EmbedJob.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
        except NoSuchJobError:
            continue
        queue = Queue(job.origin, connection=connection, serializer=MsgpackSerializer, job_class=EmbedJob)
        if job.get_status(refresh=False) == JobStatus.QUEUED and back_to_front(queue, job_id):
            log.warning("job %s, taken by dead worker %s but never started: back in the queue", job_id, worker_name)
            returned.append(job_id)
    connection.delete(claimed_key(worker_name))
    return returned


class OrphanSweep:
    """Jobs a worker took off the queue (rq's dequeue moves them to the queue's intermediate list)
    and died before starting: rq alone finds them only at its 10-minute maintenance. A job still
    unstarted there after `grace` seconds (a live worker starts one within milliseconds) goes back
    to the front of the queue; it never started, so no retry is used."""

    def __init__(self, connection: Redis, queue_name: str, grace: float = 5.0):
        self.queue = Queue(queue_name, connection=connection, serializer=MsgpackSerializer, job_class=EmbedJob)
        self.grace = grace
        self.first_seen: dict[str, float] = {}

    def sweep(self, now: float) -> list[str]:
        """Hand back the orphans found; their ids."""
        waiting = rq_compat.unstarted_in_intermediate(self.queue)
        self.first_seen = {job_id: self.first_seen.get(job_id, now) for job_id in waiting}
        returned = []
        for job_id, seen in list(self.first_seen.items()):
            if now - seen < self.grace:
                continue
            del self.first_seen[job_id]
            job = self.queue.fetch_job(job_id)
            if job is None or job.get_status(refresh=False) != JobStatus.QUEUED:
                continue  # ended or running after all: rq's own clean-up takes it from the list
            with self.queue.connection.pipeline() as pipe:
                rq_compat.leave_intermediate(self.queue, job_id, pipe)
                back_to_front(self.queue, job_id, pipe)
                pipe.execute()
            log.warning(
                "job %s was taken off queue %s by a worker that never started it: back in the queue",
                job_id,
                self.queue.name,
            )
            returned.append(job_id)
        return returned


def bury_worker(connection: Redis, worker_name: str, cause: str) -> list[str]:
    """Everything a dead worker leaves behind: its jobs handed back, its rq record and facts removed."""
    recovered = recover_jobs(connection, worker_name, cause) + return_claimed(connection, worker_name)
    rq_compat.remove_worker_record(connection, worker_name)
    connection.delete(worker_key(worker_name))
    return recovered
