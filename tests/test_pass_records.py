"""rq's records of jobs run in embedq's passes (broker/lua/take_pass.lua and finish_pass.lua), read by rq's
own readers on a real Redis, side by side with the same job run by rq's own SimpleWorker: status,
timestamps, worker, return value, registries, TTLs, worker counts, failures, retries and rq's own
clean-up of an abandoned job. No model: the pass here 'embeds' by writing a fixed result."""

from __future__ import annotations

import re
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from redis import Redis
from rq import Queue, Retry, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.utils import utcformat

from embedq import ClientSettings
from embedq.broker.cache import CacheWrites
from embedq.broker.histograms import TIMINGS, timing_increments
from embedq.broker.jobs import EmbedRequest, MsgpackSerializer
from embedq.broker.keys import bell_key, doorbell_key, held_key, idle_key, waiters_key
from embedq.broker.rq_private.pass_worker import Done, PassWorker, ShardKeys, TakenPass
from embedq.broker.rq_private.queues import lane_queues
from embedq.broker.rq_private.records import result_stream_key
from embedq.broker.scripts import bind, load
from embedq.producer.enqueue import plan_enqueue

TTL = 600


class FixedPass(PassWorker):
    """A pass that succeeds every job with the same result (or fails those named in `failing`)."""

    failing: ClassVar[set[str]] = set()
    seen_started: ClassVar[list[tuple[str, str]]] = []
    cache: ClassVar[CacheWrites] = CacheWrites("", "", 60, 0, "embedq:test:cache-stats", "embedq:test:cache-index", {})

    def execute_pass(self, taken: TakenPass) -> None:
        FixedPass.seen_started = StartedJobRegistry(queue=taken.queue).get_job_and_execution_ids()
        done = []
        for job in taken.jobs:
            if job.id in self.failing:
                try:
                    raise RuntimeError("this job was told to fail")
                except RuntimeError:
                    self.fail_job(job, taken, sys.exc_info())
                continue
            done.append(Done(job, 1, b"packed", (1, 4, 0)))
        self.finish_pass(
            taken,
            done,
            lane="interactive",
            result_ttl=TTL,
            facts_ttl=90,
            metrics="embedq:test:metrics",
            timings="embedq:test:timings",
            histogram=timing_increments("interactive", [dict.fromkeys(TIMINGS, 3.0)] * len(done)),
            cache=self.cache,
        )


@pytest.fixture
def queue(redis: Redis) -> Queue:
    return Queue(f"records-{uuid.uuid4().hex[:8]}", connection=redis, serializer=MsgpackSerializer)


def enqueue(queue: Queue, **options: Any) -> Job:
    return queue.enqueue("builtins.len", ["a"], result_ttl=TTL, failure_ttl=TTL, meta={"texts": 1}, **options)


def pass_worker(queue: Queue, name: str, **options: Any) -> FixedPass:
    shard = ShardKeys.of(queue.name, [queue], name, cluster=False)
    return FixedPass([shard], connection=queue.connection, name=name, serializer=MsgpackSerializer, **options)


def run_passes(queue: Queue, name: str) -> FixedPass:
    worker = pass_worker(queue, name, max_jobs=8, max_texts=8)
    worker.work(burst=True)
    return worker


def test_a_job_done_in_a_pass_reads_back_as_rqs_own_worker_leaves_it(queue: Queue):
    theirs = enqueue(queue)
    SimpleWorker([queue], connection=queue.connection, serializer=MsgpackSerializer, name=f"rq-{queue.name}").work(
        burst=True
    )
    ours = enqueue(queue)
    worker = run_passes(queue, f"pass-{queue.name}")
    connection = queue.connection
    assert FixedPass.seen_started == [(ours.id, FixedPass.seen_started[0][1])], "started while its pass ran"
    their_fields, our_fields = set(connection.hgetall(theirs.key)), set(connection.hgetall(ours.key))
    assert their_fields == our_fields
    for job_id in (theirs.id, ours.id):
        job = Job.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
        assert job.get_status() == JobStatus.FINISHED
        assert job.started_at and job.ended_at and job.ended_at >= job.started_at
        assert job.worker_name in (f"rq-{queue.name}", worker.name)
        assert job.return_value() == 1
        latest = job.latest_result()
        assert latest is not None and latest.type == Result.Type.SUCCESSFUL
        assert TTL - 5 < connection.ttl(job.key) <= TTL
        assert TTL - 5 < connection.ttl(result_stream_key(job_id)) <= TTL
        assert job_id in FinishedJobRegistry(queue=queue)
        assert job_id not in StartedJobRegistry(queue=queue)
    assert queue.count == 0
    their_worker, our_worker = (connection.hgetall(f"rq:worker:{n}") for n in (f"rq-{queue.name}", worker.name))
    assert their_worker[b"successful_job_count"] == our_worker[b"successful_job_count"] == b"1"
    assert not connection.exists(held_key(worker.name))


def test_a_failure_in_a_pass_is_retried_then_failed_with_its_reason_as_rq_does(queue: Queue):
    job = enqueue(queue, retry=Retry(max=1))
    FixedPass.failing = {job.id}
    try:
        run_passes(queue, f"pass-{queue.name}")
    finally:
        FixedPass.failing = set()
    job = Job.fetch(job.id, connection=queue.connection, serializer=MsgpackSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert job.retries_left == 0, "one retry was used, then it failed for good"
    assert job.id in FailedJobRegistry(queue=queue)
    latest = job.latest_result()
    assert latest is not None and "this job was told to fail" in (latest.exc_string or "")
    assert not StartedJobRegistry(queue=queue).get_job_ids()


def test_rqs_own_clean_up_hands_back_a_job_whose_pass_never_ended(queue: Queue):
    job = enqueue(queue, retry=Retry(max=2))
    worker = pass_worker(queue, f"dead-{queue.name}")
    taken = worker.take(worker.home, [queue])
    assert isinstance(taken, TakenPass) and [j.id for j in taken.jobs] == [job.id]
    assert Job.fetch(job.id, connection=queue.connection).get_status() == JobStatus.STARTED
    StartedJobRegistry(queue=queue).cleanup(timestamp=10**10)  # as if its heartbeat had run out
    job = Job.fetch(job.id, connection=queue.connection, serializer=MsgpackSerializer)
    assert (job.get_status(), job.retries_left, queue.job_ids) == (JobStatus.QUEUED, 1, [job.id])


def test_a_pass_takes_jobs_up_to_its_text_budget_and_leaves_the_rest_in_order(queue: Queue):
    small = [enqueue(queue) for _ in range(3)]
    big = queue.enqueue("builtins.len", ["a"], meta={"texts": 7})
    after = enqueue(queue)
    worker = pass_worker(queue, f"budget-{queue.name}", max_jobs=8, max_texts=8)
    queue.connection.zadd(idle_key(queue.name), {"another-worker": time.time()})
    taken = worker.take(worker.home, [queue])
    assert isinstance(taken, TakenPass)
    assert [j.id for j in taken.jobs] == [j.id for j in small]
    assert queue.job_ids == [big.id, after.id]
    assert queue.connection.llen(doorbell_key(queue.name)) == 1, "work left behind rings for the idle worker"


def test_a_job_whose_worker_died_before_runs_in_a_pass_of_its_own(queue: Queue):
    first = enqueue(queue)
    abandoned = queue.enqueue("builtins.len", ["a"], meta={"texts": 1, "abandoned": 1})
    last = enqueue(queue)
    worker = pass_worker(queue, f"alone-{queue.name}", max_jobs=8, max_texts=8)
    passes = []
    while isinstance(taken := worker.take(worker.home, [queue]), TakenPass):
        passes.append([j.id for j in taken.jobs])
    assert passes == [[first.id], [abandoned.id], [last.id]]


def test_jobs_released_from_a_pass_go_back_to_the_head_untouched_unless_already_recorded(queue: Queue):
    first, second, later = enqueue(queue), enqueue(queue), enqueue(queue)
    worker = pass_worker(queue, f"release-{queue.name}", max_jobs=2, max_texts=8)
    taken = worker.take(worker.home, [queue])
    assert isinstance(taken, TakenPass) and [j.id for j in taken.jobs] == [first.id, second.id]
    queue.connection.hset(second.key, "status", "finished")  # as if recorded just before the release
    worker.release(taken, taken.jobs)
    assert queue.job_ids == [first.id, later.id]
    job = Job.fetch(first.id, connection=queue.connection, serializer=MsgpackSerializer)
    assert (job.get_status(), job.retries_left) == (JobStatus.QUEUED, None)
    assert not StartedJobRegistry(queue=queue).get_job_ids()
    assert not queue.connection.exists(held_key(worker.name))
    assert queue.connection.llen(doorbell_key(queue.name)) >= 1


def test_an_idle_wait_takes_the_job_that_rings_the_doorbell_in_the_same_round_trip(queue: Queue):
    worker = pass_worker(queue, f"wait-{queue.name}")
    assert worker.take(worker.home, [queue]) is None  # nothing yet: the worker is idle
    enqueued = []

    def producer() -> None:
        enqueued.append(enqueue(queue))
        queue.connection.lpush(doorbell_key(queue.name), 1)

    threading.Timer(0.3, producer).start()
    began = time.monotonic()
    taken = worker.wait_and_take([queue])
    assert time.monotonic() - began < 0.9, "the bell, not the end of the wait, returned the read"
    assert isinstance(taken, TakenPass) and [j.id for j in taken.jobs] == [enqueued[0].id]
    job = Job.fetch(enqueued[0].id, connection=queue.connection, serializer=MsgpackSerializer)
    assert job.get_status() == JobStatus.STARTED and job.worker_name == worker.name
    assert job.started_at is not None and job.enqueued_at is not None
    assert job.enqueued_at <= job.started_at <= datetime.now(UTC), "stamped when the bell rang"


RQ_TIME = re.compile(r"local function rq_time.*?-- end rq_time", re.DOTALL)


def test_take_pass_writes_times_as_rq_formats_them(redis: Redis):
    """take_pass.lua stamps started_at with Redis' clock in rq's format: its calendar arithmetic checked
    against Python's on leap days, year and century ends, and the epoch."""
    (function,) = RQ_TIME.findall(load("take_pass").source)
    moments = [0, 951_782_400, 951_868_799, 1_078_012_800, 1_234_567_890, 1_767_225_599, 4_107_542_400, 4_102_444_800]
    moments += [946_684_800 + day * 86_400 + 3_723 for day in range(0, 3_000, 37)]
    stamped = redis.eval(
        function + "\nlocal out = {}\nfor i = 1, #ARGV do out[i] = rq_time(tonumber(ARGV[i]), 123456) end\nreturn out",
        0,
        *moments,
    )
    expected = [utcformat(datetime.fromtimestamp(moment, UTC).replace(microsecond=123456)) for moment in moments]
    assert [value.decode() for value in stamped] == expected


def test_a_submit_rings_the_worker_that_went_idle_last_and_skips_one_that_stopped_looking(redis: Redis):
    name = f"ring-{uuid.uuid4().hex[:8]}"
    settings = ClientSettings(queue=name)
    lane = lane_queues(name, redis)["interactive"]
    now = time.time()
    redis.zadd(waiters_key(name), {"warm": now - 1, "cold": now - 30, "gone": now - 0.5})
    redis.zadd(idle_key(name), {"warm": now - 0.5, "cold": now - 0.2, "gone": now - 60})  # gone: last looked long ago

    def submit() -> None:
        plan = plan_enqueue(lane, name, settings, [EmbedRequest(["a"])], "interactive")
        plan.check(bind(redis, "enqueue")(plan.keys, plan.args))
        redis.delete(lane.key)  # the lane empty again: the next submit rings too

    submit()
    assert (redis.llen(bell_key(name, "warm")), redis.llen(bell_key(name, "cold"))) == (1, 0)
    assert not redis.exists(bell_key(name, "gone")) and redis.zscore(waiters_key(name), "gone") is None
    assert redis.llen(doorbell_key(name)) == 0
    redis.delete(waiters_key(name))
    submit()
    assert redis.llen(doorbell_key(name)) == 1, "no idle worker looked lately: the shared doorbell rings"


def test_an_idle_worker_keeps_when_it_went_idle_while_it_looks_again_and_leaves_the_waiters_when_it_takes(
    queue: Queue,
):
    worker = pass_worker(queue, f"waiter-{queue.name}")
    waiters = waiters_key(queue.name)
    assert worker.take(worker.home, [queue]) is None
    went_idle = queue.connection.zscore(waiters, worker.name)
    assert went_idle is not None
    time.sleep(0.05)
    assert worker.take(worker.home, [queue]) is None  # its periodic look
    assert queue.connection.zscore(waiters, worker.name) == went_idle
    assert queue.connection.zscore(idle_key(queue.name), worker.name) > went_idle, "its last look is newer"
    enqueue(queue)
    assert isinstance(worker.take(worker.home, [queue]), TakenPass)
    assert queue.connection.zscore(waiters, worker.name) is None


def test_an_idle_look_forgets_workers_gone_for_ten_minutes_without_a_burial(queue: Queue):
    ghost_seen = time.time() - 601
    queue.connection.zadd(idle_key(queue.name), {"ghost": ghost_seen, "recent": time.time() - 5})
    queue.connection.zadd(waiters_key(queue.name), {"ghost": ghost_seen})
    assert (forgetful := pass_worker(queue, f"forget-{queue.name}")).take(forgetful.home, [queue]) is None
    assert queue.connection.zscore(idle_key(queue.name), "ghost") is None
    assert queue.connection.zscore(waiters_key(queue.name), "ghost") is None
    assert queue.connection.zscore(idle_key(queue.name), "recent") is not None


def test_a_worker_that_stops_is_no_longer_among_the_idle_workers(queue: Queue):
    worker = run_passes(queue, f"stops-{queue.name}")  # a burst on an empty queue: one idle look, then it stops
    assert queue.connection.zscore(idle_key(queue.name), worker.name) is None
    assert queue.connection.zscore(waiters_key(queue.name), worker.name) is None


def test_entries_gone_by_their_ttl_are_counted_out_of_the_caches_budget(queue: Queue):
    """A pass's accounting drops what expired since it last looked (a count that only grew would fill the
    budget for good and trim live entries instead)."""
    redis, q = queue.connection, queue.name
    stats, index = f"embedq:{q}:cache-stats", f"embedq:{q}:cache-index"

    def pass_storing(hashed: str, ttl: int) -> dict[str, int]:
        FixedPass.cache = CacheWrites(f"embedq:{q}:cache:", "fp", ttl, 10**9, stats, index, {hashed: b"v" * 1600})
        try:
            enqueue(queue)
            run_passes(queue, f"w-{uuid.uuid4().hex[:6]}")
        finally:
            FixedPass.cache = CacheWrites("", "", 60, 0, stats, index, {})
        return {name: int(redis.hget(stats, name) or 0) for name in ("entries", "bytes")}

    first = pass_storing("a" * 32, ttl=1)
    assert first["entries"] == 1 and first["bytes"] > 1600
    time.sleep(2.1)  # Redis drops the entry; only the accounting can forget it
    assert not redis.exists(f"embedq:{q}:cache:fp:{'a' * 32}")
    assert pass_storing("b" * 32, ttl=60) == first, "the expired entry is still counted"
    assert [member.decode() for member in redis.zrange(index, 0, -1)] == [f"fp:{'b' * 32}"]
