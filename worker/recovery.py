"""Hand back the jobs of a worker that died, at once instead of after rq's started-registry expiry:
each job its pass held is re-queued while it has retries left, else failed with the reason. rq's
own machinery does the bookkeeping, reached through broker/rq_private."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis import Redis

from embedq.broker.jobs import MsgpackSerializer
from embedq.broker.keys import bell_key, doorbell_key, held_key, idle_key, waiters_key, worker_key
from embedq.broker.rq_private import JobStatus, NoSuchJobError, Queue
from embedq.broker.rq_private.handback import fail, leave_started, remove_worker_record, retry
from embedq.worker.tasks import EmbedJob

log = logging.getLogger(__name__)


def recover_jobs(connection: Redis, worker_name: str, cause: str, shards: Sequence[str]) -> list[str]:
    """Re-queue (or fail, when out of retries) every job `worker_name`'s passes held in any of the queue's
    `shards` (broker/shards.py); their ids."""
    recovered = []
    for shard in shards:
        recovered += _recover_held(connection, worker_name, cause, shard)
    return recovered


def _recover_held(connection: Redis, worker_name: str, cause: str, shard: str) -> list[str]:
    recovered = []
    held = held_key(worker_name, shard)
    members: set[bytes] = connection.smembers(held)  # type: ignore[assignment]
    for member in members:
        job_id, execution_id = member.decode().rsplit(":", 1)
        try:
            job = EmbedJob.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
        except NoSuchJobError:
            continue
        if job.get_status(refresh=False) != JobStatus.STARTED or job.worker_name != worker_name:
            continue  # ended, or handed back and taken by another worker since
        queue = Queue(job.origin, connection=connection, serializer=MsgpackSerializer, job_class=EmbedJob)
        abandoned = int(job.meta.get("abandoned", 0)) + 1
        job.meta["abandoned"] = abandoned  # the next pass runs it alone: it cannot take neighbours down again
        with connection.pipeline() as pipe:
            leave_started(job, execution_id, pipe)
            pipe.hset(job.key, "meta", MsgpackSerializer.dumps(job.meta))
            if job.retries_left:
                retry(job, queue, pipe)
                pipe.lpush(doorbell_key(shard), 1)
                outcome = f"re-queued ({job.retries_left} retries left)"
            else:
                fail(
                    job,
                    f"AbandonedJobError: job abandoned {abandoned} times: its worker died each time "
                    f"(last: {worker_name}, {cause}); no retries left",
                    pipe,
                )
                outcome = "failed: no retries left"
            pipe.execute()
        log.warning("job %s of dead worker %s (%s): %s", job_id, worker_name, cause, outcome)
        recovered.append(job_id)
    connection.delete(held)
    return recovered


def bury_worker(connection: Redis, worker_name: str, cause: str, shards: Sequence[str]) -> list[str]:
    """Everything a dead worker leaves behind: its jobs handed back, its rq record, facts and place among
    the idle workers of every shard removed, and an idle worker woken to look for what was rung for it."""
    recovered = recover_jobs(connection, worker_name, cause, shards)
    remove_worker_record(connection, worker_name)
    connection.delete(worker_key(worker_name))
    for shard in shards:
        with connection.pipeline() as pipe:
            pipe.zrem(idle_key(shard), worker_name)
            pipe.zrem(waiters_key(shard), worker_name)
            pipe.delete(bell_key(shard, worker_name))
            pipe.lpush(doorbell_key(shard), 1)  # a submit may have rung the dead worker's own doorbell
            pipe.execute()
    return recovered
