"""The rq surface embedq.broker.rq_private relies on (its docstring lists it), checked against the
installed rq. When an rq upgrade moves any of it, the failure names what changed and where."""

import inspect
from typing import Any, ClassVar

import fakeredis
import pytest
import rq
from rq import Queue, Retry, SimpleWorker
from rq.executions import Execution
from rq.job import Job, validate_job_id
from rq.job_lifecycle import call_exception_handlers, record_job_failure
from rq.results import Result
from rq.suspension import WORKERS_SUSPENDED
from rq.timeouts import UnixSignalDeathPenalty

from embedq import ClientSettings
from embedq.broker.jobs import EMBED_TASK, EmbedRequest, MsgpackSerializer
from embedq.broker.rq_private.hardening import GuardedJob, restored
from embedq.broker.rq_private.pass_worker import PASS_FIELDS
from embedq.broker.rq_private.queues import REDIS_VERSION_FLOOR, lane_queues
from embedq.broker.rq_private.records import SUCCESSFUL, enqueue_commands, result_stream_key
from embedq.broker.scripts import bind, load
from embedq.producer.enqueue import plan_enqueue

pytestmark = pytest.mark.unit

# (owner, name, the parameter names embedq passes or overrides with)
SIGNATURES = [
    (Job, "_deserialize_data", ["self"]),
    (Job, "retry", ["self", "queue", "pipeline"]),
    (UnixSignalDeathPenalty, "handle_death_penalty", ["self", "signum", "frame"]),
    (UnixSignalDeathPenalty, "__init__", ["self", "timeout", "exception", "kwargs"]),
    (Job, "restore", ["self", "raw_data"]),
    (SimpleWorker, "bootstrap", ["self", "logging_level"]),
    (SimpleWorker, "_install_signal_handlers", ["self"]),
    (SimpleWorker, "check_for_suspension", ["self", "burst"]),
    (SimpleWorker, "run_maintenance_tasks", ["self"]),
    (SimpleWorker, "request_stop", ["self", "signum", "frame"]),
    (SimpleWorker, "set_shutdown_requested_date", ["self"]),
    (SimpleWorker, "heartbeat", ["self", "timeout", "pipeline"]),
    (SimpleWorker, "register_birth", ["self"]),
    (SimpleWorker, "_set_connection", ["self", "connection"]),
    (SimpleWorker, "register_death", ["self"]),
    (SimpleWorker, "teardown", ["self"]),
    (SimpleWorker, "handle_exception", ["self", "job", "exc_info"]),
    (SimpleWorker, "handle_job_failure", ["self", "job", "queue", "started_job_registry", "exc_string", "execution"]),
    (Execution, "__init__", ["self", "id", "job_id", "connection", "worker_name"]),
]


def where(owner: object, name: str) -> str:
    return f"rq {rq.__version__}: {getattr(owner, '__qualname__', owner)}.{name}"


@pytest.mark.parametrize(("owner", "name", "expected"), SIGNATURES, ids=[f"{o.__name__}.{n}" for o, n, _ in SIGNATURES])
def test_the_methods_rq_private_overrides_or_calls_keep_their_signatures(owner, name, expected):
    member = getattr(owner, name, None)
    assert member is not None, f"{where(owner, name)} is gone; embedq.broker.rq_private relies on it"
    found = list(inspect.signature(member).parameters)
    assert found[: len(expected)] == expected, (
        f"{where(owner, name)} changed: embedq.broker.rq_private expects parameters {expected}, rq has {found}"
    )


def test_the_module_level_helpers_keep_their_signatures():
    for function, expected in (
        (record_job_failure, ["job", "exc_string", "pipeline"]),
        (call_exception_handlers, ["handlers", "job", "exc_info"]),
        (Result.get_key, ["job_id"]),
        (validate_job_id, ["job_id"]),
    ):
        found = list(inspect.signature(function).parameters)
        assert found == expected, f"rq {rq.__version__}: {function.__qualname__} now takes {found}, not {expected}"


def test_the_properties_and_attributes_rq_private_touches_are_there():
    for name in ("id", "should_retry", "success_callback", "failure_callback", "stopped_callback"):
        assert isinstance(inspect.getattr_static(Job, name, None), property), (
            f"{where(Job, name)} is no longer a property"
        )
    for name in ("should_run_maintenance_tasks", "connection_timeout"):
        assert isinstance(inspect.getattr_static(SimpleWorker, name, None), property), (
            f"{where(SimpleWorker, name)} is no longer a property"
        )
    worker = SimpleWorker([Queue("contract", connection=fakeredis.FakeRedis())], connection=fakeredis.FakeRedis())
    for name in (
        "_stop_requested",
        "_state",
        "pubsub_thread",
        "_exc_handlers",
        "max_connection_wait_time",
        "death_penalty_class",
        "redis_worker_namespace_prefix",
    ):
        assert hasattr(worker, name), f"{where(SimpleWorker, name)} is gone; embedq.broker.rq_private uses it"
    assert worker._stop_requested is False, f"{where(SimpleWorker, '_stop_requested')} no longer starts False"

    class NoInfo(fakeredis.FakeRedis):
        def info(self, *args, **kwargs):
            raise AssertionError("rq asked Redis its version although embedq gave it")

    (given,) = {queue.get_redis_server_version() for queue in lane_queues("contract", NoInfo()).values()}
    assert given == REDIS_VERSION_FLOOR, f"rq {rq.__version__}: Queue.redis_server_version no longer stands for INFO"
    penalty = UnixSignalDeathPenalty(7, RuntimeError)
    assert (penalty._timeout, penalty._exception) == (7, RuntimeError), (
        f"{where(UnixSignalDeathPenalty, '_timeout / _exception')} moved: the JOB_TIMEOUT message reads them"
    )


def test_the_key_layouts_and_formats_rq_private_writes_are_rqs():
    queue = Queue("q1", connection=fakeredis.FakeRedis())
    for what, found, expected in (
        ("the result stream key", result_stream_key("abc"), "rq:results:abc"),
        ("the job key prefix", Job.redis_job_namespace_prefix, "rq:job:"),
        ("the suspension flag", WORKERS_SUSPENDED, "rq:suspended"),
        ("the started registry", queue.started_job_registry.key, "rq:wip:q1"),
        ("the finished registry", queue.finished_job_registry.key, "rq:finished:q1"),
        ("a success's result type", SUCCESSFUL, b"1"),
        ("rq's default job timeout", Queue.DEFAULT_TIMEOUT, 180),
    ):
        assert found == expected, f"rq {rq.__version__}: {what} is now {found!r}, not {expected!r}"


def test_rq_reads_a_stored_call_through_the_guarded_hook_and_never_imports_it():
    class Recording(GuardedJob):
        seen: ClassVar[list[bytes]] = []

        def read_call(self, data):
            Recording.seen.append(data)
            return "embedq.safe.name", None, ["the argument"], {}

    connection = fakeredis.FakeRedis()
    queue = Queue("contract", connection=connection, serializer=MsgpackSerializer)
    stored = queue.enqueue_call("os.system", args=({"v": 1},))
    job = Recording.fetch(stored.id, connection=connection, serializer=MsgpackSerializer)
    assert (job.func_name, job.args, job.kwargs, job.instance) == ("embedq.safe.name", ["the argument"], {}, None), (
        f"rq {rq.__version__} no longer fills func_name/args/kwargs from Job._deserialize_data's attributes"
    )
    assert Recording.seen, f"rq {rq.__version__} no longer calls Job._deserialize_data when it reads a job"
    assert (job.success_callback, job.failure_callback, job.stopped_callback) == (None, None, None)
    job.retries_left = 2
    assert job.should_retry
    job.permanent_failure = True
    assert not job.should_retry, "a permanent failure must not be retried"
    assert stored.func_name == "os.system" and EMBED_TASK != "os.system"  # plain rq would import it


def as_rq_would(request: EmbedRequest, settings: ClientSettings, job_id: str | None = None) -> Any:
    """rq's own enqueue data for an embed job with the settings' options."""
    return Queue.prepare_data(
        EMBED_TASK,
        args=(request.to_payload(),),
        timeout=settings.job_timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.result_ttl,
        retry=Retry(max=settings.retries),
        description=f"embed {len(request.texts)} texts",
        meta={"texts": len(request.texts)},
        job_id=job_id,
    )


def test_the_guarded_enqueue_writes_exactly_what_rqs_enqueue_writes():
    connection = fakeredis.FakeRedis()
    queue = Queue("contract", connection=connection, serializer=MsgpackSerializer)
    settings = ClientSettings(queue="contract", retries=2, job_timeout=120, result_ttl=3600)
    request = EmbedRequest(["the same job, twice"])
    by_rq = queue.enqueue_many([as_rq_would(request, settings)])[0]
    plan = plan_enqueue(queue, "contract", settings, [request], "interactive")
    (ours,) = plan.check(bind(connection, "enqueue")(plan.keys, plan.args))
    varying = {b"created_at", b"enqueued_at", b"last_heartbeat"}
    theirs, mine = connection.hgetall(by_rq.key), connection.hgetall(Job.key_for(ours))
    assert {k: v for k, v in theirs.items() if k not in varying} == {k: v for k, v in mine.items() if k not in varying}
    assert queue.job_ids == [by_rq.id, ours]
    assert connection.ttl(by_rq.key) == connection.ttl(Job.key_for(ours))
    fetched = Job.fetch(ours, connection=connection, serializer=MsgpackSerializer)
    assert (fetched.func_name, fetched.args, fetched.retries_left, fetched.get_status()) == (
        EMBED_TASK,
        [request.to_payload()],
        2,
        "queued",
    )


def test_the_enqueue_template_sends_the_commands_rqs_enqueue_many_sends_for_the_same_jobs():
    connection = fakeredis.FakeRedis()
    queue = Queue("contract", connection=connection, serializer=MsgpackSerializer)
    settings = ClientSettings(queue="contract", retries=3, job_timeout=77, result_ttl=999)
    requests = [EmbedRequest(["one"]), EmbedRequest(["two", "three"], dimensions=8, normalize=False)]
    plan = plan_enqueue(queue, "contract", settings, requests, "interactive")
    _, by_rq = enqueue_commands(
        queue, [as_rq_would(request, settings, job_id) for job_id, request in zip(plan.job_ids, requests)]
    )
    ours, at = [], len(load("enqueue").argv)  # after the script's fixed arguments (the last: commands naming no job)

    def commands(count: int) -> None:
        nonlocal at
        for _ in range(count):
            ours.append(plan.args[at + 1 : at + 1 + plan.args[at]])
            at += 1 + plan.args[at]

    commands(plan.args[at - 1])
    while at < len(plan.args):  # per job: its id, its hashes (a count, then each), its shape, its commands
        at += 4 + plan.args[at + 1]  # past the id, the count, the hashes, the shape and the command count
        commands(plan.args[at - 1])

    def timeless(commands):
        times = ("created_at", "enqueued_at")
        return [[None if before in times else arg for before, arg in zip([None, *c], c)] for c in commands]

    assert timeless(ours) == timeless(by_rq), f"rq {rq.__version__} now writes other commands for a job"


def test_a_job_restored_from_the_blank_is_the_job_rqs_init_and_restore_build():
    connection = fakeredis.FakeRedis()
    queue = Queue("contract", connection=connection, serializer=MsgpackSerializer)
    stored = queue.enqueue_call(EMBED_TASK, args=({"v": 1},), meta={"texts": 3}, timeout=77, result_ttl=99)
    times = {"started_at": "2026-02-28T23:59:59.999999Z", "last_heartbeat": "2026-03-01T00:00:00Z"}  # rq's two formats
    connection.hset(stored.key, mapping=times)
    names = (*PASS_FIELDS, *times)
    fields = dict(zip(names, connection.hmget(stored.key, names)))
    by_rq = GuardedJob(stored.id, connection=connection, serializer=MsgpackSerializer)
    by_rq.restore(dict(fields))
    blank = GuardedJob(connection=connection, serializer=MsgpackSerializer)
    ours = restored(blank, stored.id, dict(fields))
    varying = {"created_at", "log"}
    theirs = {k: v for k, v in vars(by_rq).items() if k not in varying}
    mine = {k: v for k, v in vars(ours).items() if k not in varying}
    assert mine == theirs, f"rq {rq.__version__}: Job.__init__ / restore now set other attributes"
    shared = [k for k, v in vars(ours).items() if isinstance(v, list | dict) and v is vars(blank).get(k)]
    assert not shared, f"a restored job shares {shared} with the blank it was copied from"


def test_a_guarded_job_takes_a_shards_ids_and_refuses_what_rq_refuses():
    connection = fakeredis.FakeRedis()
    job = GuardedJob("{54h}0123abcd", connection=connection)
    assert (job.id, job.key) == ("{54h}0123abcd", "rq:job:{54h}0123abcd")
    for bad in ("{54h}01:23", "{}0123", "{54h0123", "0123}", "a b"):
        with pytest.raises(ValueError, match="Job ID must only contain"):
            GuardedJob(bad, connection=connection)
    with pytest.raises(ValueError):
        Job("{54h}0123abcd", connection=connection)  # rq's own Job: why its readers cannot fetch such a job
    assert len(GuardedJob(connection=connection).id) == 36  # no id given: rq's own (a uuid4)
