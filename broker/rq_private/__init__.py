"""The one place embedq imports rq: everything it takes from rq, documented API or not. rq is pinned to
the release CI tests (pyproject.toml); tests/test_rq_contract.py checks every item below against the
installed rq and names the one that moved. Modules: records (keys, fields, result entries, enqueue
commands), hardening (the guarded job, the named timeout), pass_worker (the worker loop), handback
(a dead worker's jobs); the rq classes the rest of embedq names are re-exported here.

rq's private or undocumented surface used here, and why:
- `Queue.enqueue_many(datas, pipeline)` run against an unsent pipeline, whose `command_stack`
  (redis-py's) is read back: rq's exact writes for a model job, once per lane and options
  (records.JobTemplate); each submitted job is a copy with its own id, times (`utcformat`), data
  (zlib of the msgpack call, as `Job.to_dict`), description and meta, sent inside one script;
  `Queue.redis_server_version`, set (REDIS_VERSION_FLOOR) so that rq never asks Redis (INFO) itself.
- rq's records of a job, written by embedq's worker for a whole pass in one script each
  (broker/lua/take_pass.lua, finish_pass.lua) as rq's own worker writes them for one job: the job hash `rq:job:{id}`
  (`Job.key_for`) and its fields `status`, `started_at`, `ended_at`, `worker_name`,
  `last_heartbeat`, `timeout`, `meta` (msgpack, read in Lua); rq's timestamp format (`utcformat`);
  the started registry `rq:wip:{queue}` with members `{job_id}:{execution_id}` scored by their
  expiry; the finished registry `rq:finished:{queue}` scored by expiry; the result stream
  `rq:results:{job_id}` (`Result.get_key`) and its entry fields (`type`, `worker_name`,
  `execution_id`, `execution_started_at`, `execution_ended_at`, `return_value` as base64 of the
  serialized value; capped at 10 entries, TTL = result TTL); the suspension flag `rq:suspended`;
  the worker hash's `state`, `successful_job_count` and `total_working_time`.
- `Result.restore` and `Result.Type` to read a failure from the result stream.
- `Job.restore(raw hash)` to build a Job from what take_pass.lua read, on a copy of a blank Job's
  `__dict__` (hardening.restored: rq's `__init__` per job is slow) with `_id`, `created_at` and the
  times (ISO 8601) set by embedq; `Job._deserialize_data` and
  the attributes it fills (`_func_name`, `_instance`, `_args`, `_kwargs`): GuardedJob parses the
  stored payload itself and never imports a function by name.
- `Job.success_callback` / `failure_callback` / `stopped_callback`: forced to None (never imported).
- `Job.should_retry`: False after a permanent failure, leaving `retries_left` as it was.
- `Job.id` (property over `_id`) and `validate_job_id`: GuardedJob takes a shard's ids, `{tag}` then an
  id rq would take (rq's own Job refuses braces, so rq's readers cannot fetch a job of a tagged shard).
- `UnixSignalDeathPenalty.handle_death_penalty` with its `_timeout` / `_exception`: the timeout
  message names JOB_TIMEOUT.
- Worker internals used by PassWorker's own loop: `bootstrap`, `_install_signal_handlers` (rq's
  `request_stop` raises `StopRequested` when the local `_state` is not busy, else sets
  `_stop_requested`), `check_for_suspension`, `should_run_maintenance_tasks` /
  `run_maintenance_tasks`, `heartbeat(timeout, pipeline)`, `register_birth`, `register_death`,
  `set_shutdown_requested_date` (called by `request_stop`), `teardown` and `pubsub_thread`,
  `handle_exception` (rq's own logs the job's arguments, a user's texts, as log extras) with
  `_exc_handlers`, `handle_job_failure(job, queue, started_job_registry, exc_string, execution)`
  with an unsaved `Execution(id, job_id, connection, worker_name)`, `max_connection_wait_time`,
  `death_penalty_class`, `_set_connection(connection)` (rq raises the socket timeout of the client's one
  pool, which a Cluster client does not have: skipped there).
- `Job.cancel()` with `Job.connection` set to a plain client of the node of the job's slot on a Cluster
  (rq's cancel opens a WATCH/MULTI transaction through `pipeline().explicit_transaction`, which redis-py's
  ClusterPipeline does not have; its keys are all the job's shard's).
- Handing back a dead worker's jobs: `Job.retry(queue, pipeline)`,
  `rq.job_lifecycle.record_job_failure(job, exc_string, pipeline)`, `Worker.find_by_key` with
  `redis_worker_namespace_prefix` (on a subclass whose `_set_connection` takes any client).
"""

from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.timeouts import JobTimeoutException

__all__ = [
    "FailedJobRegistry",
    "InvalidJobOperation",
    "Job",
    "JobStatus",
    "JobTimeoutException",
    "NoSuchJobError",
    "Queue",
    "Retry",
    "StartedJobRegistry",
]
