"""Hand back the jobs of a worker that died, at once instead of after rq's heartbeat expiry
(~80 s): each is re-queued while it has retries left, else failed with the reason. rq's own
machinery (Execution, Job.retry, record_job_failure) does the bookkeeping."""

from __future__ import annotations

import logging

from redis import Redis
from rq import Queue, SimpleWorker
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution
from rq.job import JobStatus
from rq.job_lifecycle import record_job_failure
from rq.exceptions import NoSuchJobError

from embedq.producer.protocol import MsgpackSerializer, claimed_key, worker_key
from embedq.worker.tasks import EmbedJob

log = logging.getLogger(__name__)


def recover_jobs(connection: Redis, worker_name: str, cause: str) -> list[str]:
    """Re-queue (or fail, when out of retries) every job `worker_name` was running; their ids."""
    executions_key = WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name)
    recovered = []
    for member in connection.smembers(executions_key):
        composite = member.decode()
        job_id, execution_id = composite.rsplit(":", 1)
        try:
            job = EmbedJob.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
        except NoSuchJobError:
            connection.srem(executions_key, composite)
            continue
        status = job.get_status(refresh=False)
        if status not in (JobStatus.STARTED, JobStatus.QUEUED):
            connection.srem(executions_key, composite)
            continue
        queue = Queue(job.origin, connection=connection, serializer=MsgpackSerializer, job_class=EmbedJob)
        execution = Execution(execution_id, job_id, connection=connection, worker_name=worker_name)
        with connection.pipeline() as pipe:
            execution.delete(job=job, pipeline=pipe)
            # rq's own clean-up would later take a job left in the intermediate list for a stuck one
            pipe.lrem(queue.intermediate_queue_key, 0, job_id)
            if status == JobStatus.QUEUED:  # dequeued, never started: back to the front, no retry used
                if connection.lpos(queue.key, job_id) is None:
                    queue.push_job_id(job_id, pipeline=pipe, at_front=True)
                outcome = "never started; back in the queue"
            else:
                abandoned = int(job.meta.get("abandoned", 0)) + 1
                job.meta["abandoned"] = abandoned
                pipe.hset(job.key, "meta", MsgpackSerializer.dumps(job.meta))
                if job.retries_left:
                    job.retry(queue, pipe)
                    outcome = f"re-queued ({job.retries_left} retries left)"
                else:
                    record_job_failure(
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
    for member in connection.smembers(claimed_key(worker_name)):
        job_id = member.decode()
        try:
            job = EmbedJob.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
        except NoSuchJobError:
            continue
        queue = Queue(job.origin, connection=connection, serializer=MsgpackSerializer, job_class=EmbedJob)
        if job.get_status(refresh=False) == JobStatus.QUEUED and connection.lpos(queue.key, job_id) is None:
            queue.push_job_id(job_id, at_front=True)
            log.warning("job %s, taken by dead worker %s but never started: back in the queue", job_id, worker_name)
            returned.append(job_id)
    connection.delete(claimed_key(worker_name))
    return returned


def bury_worker(connection: Redis, worker_name: str, cause: str) -> list[str]:
    """Everything a dead worker leaves behind: its jobs handed back, its rq record and facts removed."""
    recovered = recover_jobs(connection, worker_name, cause) + return_claimed(connection, worker_name)
    dead = SimpleWorker.find_by_key(SimpleWorker.redis_worker_namespace_prefix + worker_name, connection=connection)
    if dead is not None:
        dead.register_death()
    connection.delete(worker_key(worker_name))
    return recovered
