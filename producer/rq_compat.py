"""Everything embedq takes from rq beyond its documented API, in one module. rq is pinned to the
release CI tests (pyproject.toml); tests/test_rq_contract.py checks every item below against the
installed rq and names the one that moved. It sits in producer/ because the client needs the first
item and producer/ may not import worker/; the worker side builds on the classes here.

rq's private or undocumented surface used here, and why:
- `Queue.enqueue_many(datas, pipeline)` run against an unsent pipeline, whose `command_stack`
  (redis-py's) is read back: rq's exact writes for the jobs, sent by embedq inside one script;
  `Queue.redis_server_version`, set by AsyncEmbedClient, whose rq Queue never talks to Redis.
- `rq:job:{job_id}` (`Job.key_for`) and its `status` field, read in the client's one-round-trip
  status and result; `Result.restore` and `Result.Type` to read an entry of the result stream.
- `rq:results:{job_id}` (`Result.get_key`): the stream rq appends a job's final outcome to; `wait()`
  blocks on it (XREAD) in the same round trip as the GET of the result.
- `Job._deserialize_data` and the attributes it fills (`_func_name`, `_instance`, `_args`,
  `_kwargs`): GuardedJob parses the stored payload itself and never imports a function by name.
- `Job.success_callback` / `failure_callback` / `stopped_callback`: forced to None (never imported).
- `Job.should_retry`: False after a permanent failure, leaving `retries_left` as it was.
- `UnixSignalDeathPenalty.handle_death_penalty` with its `_timeout` / `_exception`: the timeout
  message names JOB_TIMEOUT.
- Worker internals, overridden or called: `execute_job`, `prepare_execution`,
  `prepare_job_execution(job, remove_from_intermediate_queue)`, `perform_job(job, queue, execution)`,
  `set_state`, `heartbeat(timeout, pipeline)`, `register_birth`, `register_death`, `teardown` and
  `pubsub_thread`, `handle_exception` (rq's own logs the job's arguments, a user's texts, as log
  extras) with `_exc_handlers`, `handle_job_failure(job, queue, started_job_registry, exc_string,
  execution)`, `_stop_requested`, `max_connection_wait_time`, `death_penalty_class`.
- Handing back a dead worker's jobs: `WORKER_EXECUTIONS_KEY_TEMPLATE`, `Execution(id, job_id,
  connection, worker_name).delete(job, pipeline)`, `Queue.intermediate_queue_key` (the list rq's
  dequeue moves a job into before a worker starts it; membership in `Queue.started_job_registry`),
  `Queue.push_job_id(job_id, pipeline, at_front)`, `Job.retry(queue, pipeline)`,
  `rq.job_lifecycle.record_job_failure(job, exc_string, pipeline)` and `call_exception_handlers`,
  `Worker.find_by_key` with `redis_worker_namespace_prefix`.
"""

from __future__ import annotations

import logging
from types import FrameType
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers, record_job_failure
from rq.results import Result
from rq.timeouts import UnixSignalDeathPenalty
from rq.worker import WorkerStatus

from embedq.producer.protocol import MsgpackSerializer

log = logging.getLogger(__name__)

StoredCall = tuple[Any, Any, list[Any], dict[str, Any]]  # func_name, instance, args, kwargs


def enqueue_commands(queue: Queue, datas: list[Any]) -> tuple[list[str], list[list[bytes]]]:
    """The jobs' ids and the commands rq's own `enqueue_many` would send for them, not sent: the
    caller sends them (embedq: inside one script that first checks the queue's length)."""
    pipe = queue.connection.pipeline()
    jobs = queue.enqueue_many(datas, pipeline=pipe)
    encoder = queue.connection.get_encoder()
    commands = [[encoder.encode(arg) for arg in args] for args, _ in pipe.command_stack]  # type: ignore[no-untyped-call]
    pipe.reset()
    return [job.id for job in jobs], commands


STATUS = "status"  # the field of rq's job hash that holds its status


def job_key(job_id: str) -> str:
    """rq's hash of one job."""
    return str(Job.key_for(job_id))


def failure_reason(job_id: str, entry: tuple[bytes, dict[bytes, bytes]]) -> str | None:
    """None if this entry of the job's result stream records a success; else why it failed (the
    last line of rq's exception text)."""
    entry_id, fields = entry
    result = Result.restore(job_id, entry_id.decode(), fields, connection=None, serializer=MsgpackSerializer)  # type: ignore[arg-type]
    if result.type == Result.Type.SUCCESSFUL:
        return None
    lines = [line for line in (result.exc_string or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"job ended: {result.type.name.lower()}"


def knows_server_version(queue: Queue) -> bool:
    return queue.redis_server_version is not None


def set_server_version(queue: Queue, version: str) -> None:
    """What rq's enqueue would otherwise ask Redis itself (INFO), for a queue that only builds jobs."""
    queue.redis_server_version = tuple(int(part) for part in version.split(".")[:3])  # type: ignore[assignment]


def result_stream_key(job_id: str) -> str:
    """The stream rq appends a job's final outcome (success, or failure after its retries) to."""
    return str(Result.get_key(job_id))  # type: ignore[no-untyped-call]


class GuardedJob(Job):
    """An rq Job that reads its stored call through `read_call` (which must not raise: rq reads
    func_name again while handling a failure), runs no callbacks, and is not retried once marked
    `permanent_failure`."""

    permanent_failure = False

    def read_call(self, data: bytes) -> StoredCall:
        raise NotImplementedError

    def _deserialize_data(self) -> None:
        self._func_name, self._instance, self._args, self._kwargs = self.read_call(self.data)

    @property
    def should_retry(self) -> bool:
        return not self.permanent_failure and bool(super().should_retry)

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None


class NamedTimeoutPenalty(UnixSignalDeathPenalty):
    """rq's SIGALRM timeout, with a reason that names the setting. Python runs the handler between
    bytecodes, so a job is stopped after the inference micro-batch it is in."""

    def handle_death_penalty(self, signum: int, frame: FrameType | None) -> None:
        raise self._exception(f"job ran past JOB_TIMEOUT={self._timeout} s and was stopped")


class PassWorker(SimpleWorker):
    """rq's SimpleWorker (every job in this process) that can start several jobs before running any
    of them, for a shared inference pass. Subclasses fill in the hooks below."""

    death_penalty_class = NamedTimeoutPenalty
    max_connection_wait_time = 10.0  # rq's backoff cap while Redis is away (its default: 60 s)
    permanent_failures: tuple[type[BaseException], ...] = ()  # failures that would fail the same way again

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started_early: set[str] = set()

    # hooks
    def execute_pass(self, job: Job, queue: Queue) -> None:
        """Run `job`, and whatever else the subclass takes along, to the end."""
        self.run_alone(job, queue)

    def on_birth(self) -> None:
        """Called once rq has registered this worker."""

    def on_heartbeat(self, target: Redis | Pipeline, timeout: int | None) -> None:
        """Called with every rq heartbeat (a pipeline when rq sends one)."""

    def on_death(self) -> None:
        """Called once rq has removed this worker's record."""

    def on_job_failure(self, job: Job) -> None:
        """Called for every failed attempt, before rq records it."""

    # what subclasses call
    def run_alone(self, job: Job, queue: Queue) -> None:
        """rq's own path for one job."""
        super().execute_job(job, queue)

    def start_job(self, job: Job, queue: Queue) -> Execution:
        """Register the execution and mark the job started now: if this process dies before the job
        runs, the supervisor finds it and hands it back."""
        execution = self.prepare_execution(job)
        super().prepare_job_execution(job, remove_from_intermediate_queue=len(self.queues) == 1)
        self._started_early.add(job.id)
        return execution

    def run_started_job(self, job: Job, queue: Queue, execution: Execution) -> None:
        self.perform_job(job, queue, execution)

    def mark_idle(self) -> None:
        self.set_state(WorkerStatus.IDLE)

    @property
    def stop_requested(self) -> bool:
        """A warm shutdown was asked for (SIGTERM)."""
        return bool(self._stop_requested)

    # rq's methods
    def execute_job(self, job: Job, queue: Queue) -> None:
        self.execute_pass(job, queue)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if job.id in self._started_early:  # started already by start_job; rq would do the same writes again
            self._started_early.discard(job.id)
            return
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    def register_birth(self) -> None:
        super().register_birth()  # type: ignore[no-untyped-call]
        self.on_birth()

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        super().heartbeat(timeout, pipeline)
        self.on_heartbeat(pipeline if pipeline is not None else self.connection, timeout)

    def register_death(self) -> None:
        super().register_death()  # type: ignore[no-untyped-call]
        self.on_death()

    def teardown(self) -> None:
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except RedisError:
            # rq's teardown stopped at the first Redis call: stop its pubsub thread, or every outage leaks one.
            if self.pubsub_thread:
                self.pubsub_thread.stop()
                self.pubsub_thread.join(timeout=1)
            raise

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


def executions_of(connection: Redis, worker_name: str) -> list[tuple[str, str]]:
    """(job id, execution id) of every execution rq records for this worker."""
    members: set[bytes] = connection.smembers(WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name))  # type: ignore[assignment]
    pairs = (member.decode().rsplit(":", 1) for member in members)
    return [(job_id, execution_id) for job_id, execution_id in pairs]


def forget_execution(connection: Redis, worker_name: str, job_id: str, execution_id: str) -> None:
    connection.srem(WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name), f"{job_id}:{execution_id}")


def end_execution(job: Job, execution_id: str, worker_name: str, queue: Queue, pipe: Pipeline) -> None:
    """Remove an execution record and the job from rq's intermediate list (rq would later take it for a stuck one)."""
    Execution(execution_id, job.id, connection=job.connection, worker_name=worker_name).delete(job=job, pipeline=pipe)
    pipe.lrem(queue.intermediate_queue_key, 0, job.id)


def unstarted_in_intermediate(queue: Queue) -> list[str]:
    """Jobs rq's dequeue moved off `queue` (into its intermediate list) that no worker has started."""
    raw: list[bytes] = queue.connection.lrange(queue.intermediate_queue_key, 0, -1)  # type: ignore[assignment]
    ids = [job_id.decode() for job_id in raw]
    return [job_id for job_id in ids if job_id not in queue.started_job_registry]


def leave_intermediate(queue: Queue, job_id: str, pipe: Pipeline) -> None:
    pipe.lrem(queue.intermediate_queue_key, 0, job_id)


def push_to_front(queue: Queue, job_id: str, pipe: Pipeline | None = None) -> None:
    queue.push_job_id(job_id, pipeline=pipe, at_front=True)


def retry(job: Job, queue: Queue, pipe: Pipeline) -> None:
    """Re-queue with one retry used, as rq does after a failed attempt."""
    job.retry(queue, pipe)


def fail(job: Job, reason: str, pipe: Pipeline) -> None:
    """Fail a job no worker is running (status, failed registry, failure result), as rq does for abandoned jobs."""
    record_job_failure(job, reason, pipe)


def remove_worker_record(connection: Redis, worker_name: str) -> None:
    """Drop a dead worker's rq record, as if it had shut down."""
    dead = SimpleWorker.find_by_key(SimpleWorker.redis_worker_namespace_prefix + worker_name, connection=connection)
    if dead is not None:
        dead.register_death()  # type: ignore[no-untyped-call]
