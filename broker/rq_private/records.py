"""rq's records of jobs and queues as embedq reads and writes them: the keys and fields of a job, its
result stream and what an entry says, the commands rq's enqueue would send, a worker's last heartbeat."""

from __future__ import annotations

import zlib
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import WatchError
from rq import Queue, SimpleWorker
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.registry import FinishedJobRegistry
from rq.results import Result
from rq.utils import str_to_date, utcformat

from embedq.broker.cache import CACHED_FIELD, cached_result
from embedq.broker.cluster import node_client
from embedq.broker.direct import STACK_BUILDER
from embedq.broker.jobs import EmbedResult, MsgpackSerializer, unpack_result
from embedq.broker.rq_private.hardening import GuardedJob


def enqueue_commands(queue: Queue, datas: list[Any]) -> tuple[list[str], list[list[Any]]]:
    """The jobs' ids and the commands rq's own `enqueue_many` would send for them, not sent: the
    caller sends them (embedq: inside one script that first checks the queue's length). Their
    arguments stay as rq gave them (str, bytes, int): redis-py encodes them once, when they are sent."""
    connection = queue.connection if isinstance(queue.connection, Redis) else STACK_BUILDER  # a Cluster's records none
    pipe = connection.pipeline()
    jobs = queue.enqueue_many(datas, pipeline=pipe)
    commands = [list(args) for args, _ in pipe.command_stack]
    pipe.reset()
    # rq writes a job's status alone, then again with all its fields: the second write is enough.
    commands = [
        command
        for command, following in zip(commands, [*commands[1:], None])
        if not (
            command[0] == "HSET" and command[2:] == ["status", "queued"] and following and following[1] == command[1]
        )
    ]
    return [job.id for job in jobs], commands


# The fields of rq's job hash that differ between two embed jobs of one lane and one set of options.
PER_JOB_FIELDS = ("created_at", "enqueued_at", "data", "description", "meta")


@dataclass(frozen=True)
class JobTemplate:
    """rq's enqueue commands for a model job, written by rq itself (enqueue_commands) once per lane and
    options; each new job gets a copy with its own id, times, data, description and meta. Building the
    commands this way skips rq's Job and Queue machinery on every submit (most of a submit's time in the
    client); tests/test_rq_contract.py checks that the copies are what rq writes."""

    once: list[list[Any]]  # the commands that name no job (rq sends them once per enqueue_many)
    per_job: list[list[Any]]
    job_id: str  # the model job's id: where it or its key appear, a copy puts its own
    slots: dict[tuple[int, int], str]  # (per_job command, argument) -> the PER_JOB_FIELDS value it holds

    @classmethod
    def build(cls, queue: Queue, data: Any, cluster: bool = False) -> JobTemplate:
        """From rq's commands for the model job `data` (Queue.prepare_data with a job_id). On a Redis
        `cluster`, what names another slot than the queue's (rq's set of queues) is left out."""
        (job_id,), commands = enqueue_commands(queue, [data])
        named = {job_id, job_key(job_id)}
        per_job = [command for command in commands if named & set(command)]
        slots = {}
        for c, command in enumerate(per_job):
            if command[0] == "HSET":
                fields = range(2, len(command) - 1, 2)
                slots.update({(c, a + 1): command[a] for a in fields if command[a] in PER_JOB_FIELDS})
        once = [command for command in commands if not named & set(command)]
        if cluster:
            once = [command for command in once if key_slot(str(command[1]).encode()) == key_slot(queue.key.encode())]
        return cls(once, per_job, job_id, slots)

    def commands(self, jobs: list[tuple[str, dict[str, Any]]]) -> list[list[Any]]:
        """rq's commands for these jobs: (id, PER_JOB_FIELDS values) each."""
        commands = [list(command) for command in self.once]
        for job_id, values in jobs:
            swap = {self.job_id: job_id, job_key(self.job_id): job_key(job_id)}
            copies = [[swap.get(arg, arg) if isinstance(arg, str) else arg for arg in c] for c in self.per_job]
            for (c, a), name in self.slots.items():
                copies[c][a] = values[name]
            commands += copies
        return commands


def rq_stamp() -> str:
    """Now, as rq writes times."""
    return utcformat(datetime.now(UTC))


def job_values(call: tuple[str, Any, list[Any], dict[str, Any]], description: str, meta: Any) -> dict[str, Any]:
    """A new job's PER_JOB_FIELDS as rq stores them: `call` (function name, instance, args, kwargs) as its
    data (msgpack, then zlib), `meta` in msgpack, the times now."""
    stamp = rq_stamp()
    return {
        "created_at": stamp,
        "enqueued_at": stamp,
        "data": zlib.compress(MsgpackSerializer.dumps(call)),
        "description": description,
        "meta": MsgpackSerializer.dumps(meta),
    }


STATUS = "status"  # the field of rq's job hash that holds its status


# A failed job's refusal (jobs.pack_refusal), beside rq's own fields in its hash: which text broke which rule.
REFUSAL_FIELD = "embedq_refusal"
RESULT_FIELD = "embedq"  # embedq's packed result, beside rq's own fields in a success entry


SUCCESSFUL = str(Result.Type.SUCCESSFUL.value).encode()


def job_key(job_id: str) -> str:
    """rq's hash of one job."""
    return str(Job.key_for(job_id))


def queue_key(name: str) -> str:
    """rq's list of a queue's waiting job ids."""
    return str(Queue.redis_queue_namespace_prefix + name)


def finished_registry_key(queue_name: str) -> str:
    """rq's registry of a queue's finished jobs (a sorted set scored by their expiry)."""
    return str(FinishedJobRegistry.key_template.format(queue_name))


RESULT_STREAM_PREFIX = str(Result.get_key(""))  # type: ignore[no-untyped-call]


def result_stream_key(job_id: str) -> str:
    """The stream rq appends a job's final outcome (success, or failure after its retries) to."""
    return str(Result.get_key(job_id))  # type: ignore[no-untyped-call]


def entry_outcome(job_id: str, entry: tuple[bytes, dict[bytes, bytes]]) -> tuple[EmbedResult | None, str | None]:
    """What one entry of a job's result stream says: (its result, None) for a success (a worker's packed
    result, or the cache entries of a job answered from the cache), (None, why) for a failure (the last
    line of rq's exception text)."""
    entry_id, fields = entry
    if fields.get(b"type") == SUCCESSFUL:
        if (packed := fields.get(RESULT_FIELD.encode())) is not None:
            return unpack_result(packed), None
        return (cached_result(job_id, fields), None) if CACHED_FIELD.encode() in fields else (None, None)
    if b"type" not in fields:  # the mark a refused submit leaves (producer/enqueue.py)
        return None, "never enqueued: its submit was refused"
    result = Result.restore(job_id, entry_id.decode(), fields, connection=None, serializer=MsgpackSerializer)  # type: ignore[arg-type]
    lines = [line for line in (result.exc_string or "").strip().splitlines() if line.strip()]
    return None, lines[-1] if lines else f"job ended: {result.type.name.lower()}"


def last_heartbeat(connection: Redis, worker_name: str) -> float | None:
    """When rq last heard from a worker (unix s), from its worker hash; None if it has no record."""
    raw = connection.hget(SimpleWorker.redis_worker_namespace_prefix + worker_name, "last_heartbeat")
    return str_to_date(raw).timestamp() if raw else None


def cancel_jobs(connection: Redis, job_ids: list[str], *, started: bool = False) -> int:
    """Cancel (rq's own cancel: out of the queue or the started registry, into its canceled registry) the
    jobs no worker has started yet, and with `started` those running too (their worker drops them at its
    next micro-batch and writes no result); how many."""
    cancelled = 0
    wanted = (JobStatus.QUEUED, JobStatus.STARTED) if started else (JobStatus.QUEUED,)
    for job in GuardedJob.fetch_many(job_ids, connection=connection, serializer=MsgpackSerializer):  # shards' ids
        if job is not None and job.get_status(refresh=False) in wanted:
            if isinstance(connection, RedisCluster):  # rq's WATCH/MULTI, on the node of the job's shard
                job.connection = node_client(connection, job.key)
            with suppress(InvalidJobOperation, WatchError):
                job.cancel()
                cancelled += 1
    return cancelled
