"""The client's read steps on their own (no worker): what each reply means, Redis going away while
waiting, rq's own failure records read back as a reason, and a result read from rq's result stream."""

import time

import fakeredis
import numpy as np
import pytest
from rq import Queue
from rq.job import Job

from embedq import EmbedClient, EmbedResult, JobFailed, JobLost, JobNotFound, JobTimeout, QueueUnavailable
from embedq.broker.jobs import MsgpackSerializer, job_lifetime, new_job_id, pack_result
from embedq.broker.rq_private.handback import fail
from embedq.broker.rq_private.records import RESULT_FIELD, job_key, result_stream_key
from embedq.producer.steps import Outage, Pause, Send
from embedq.producer.waiting import FIRST_SLICE_MS, status_steps, wait_steps

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def success_entry(job_id: str, vectors: np.ndarray) -> tuple[bytes, dict[bytes, bytes]]:
    """A success in rq's result stream as an embedq worker writes it."""
    packed = pack_result(EmbedResult(job_id, vectors, "m", vectors.shape[1]))
    return b"1700000000000-0", {b"type": b"1", b"worker_name": b"w", RESULT_FIELD.encode(): packed}


def test_the_first_round_reads_statuses_and_blocks_briefly_on_the_result_streams():
    steps = wait_steps(["a", "b"], timeout=10, clock=Clock())
    send = next(steps)
    assert isinstance(send, Send)
    assert [name for name, _, _ in send.commands] == ["hmget", "hmget", "xread"]
    assert send.commands[-1][2]["block"] == FIRST_SLICE_MS
    assert send.commands[-1][1][0] == {"rq:results:a": "0-0", "rq:results:b": "0-0"}
    entry = success_entry("a", np.ones((1, 2), dtype=np.float32))
    with pytest.raises(JobNotFound, match="no job b in Redis"):
        steps.send([[b"finished", b"q"], [None, None], [[b"rq:results:a", [entry]]]])


def test_the_vectors_come_with_the_read_that_wakes_the_client():
    steps = wait_steps(["a"], timeout=10, clock=Clock())
    next(steps)
    assert [name for name, _, _ in steps.send([[b"started", b"q"], None]).commands] == ["xread"]
    vectors = np.arange(3, dtype=np.float32).reshape(1, 3)
    with pytest.raises(StopIteration) as done:
        steps.send([[[b"rq:results:a", [success_entry("a", vectors)]]]])
    np.testing.assert_array_equal(done.value.value[0].embeddings, vectors)


def test_a_finished_job_whose_result_expired_is_not_found_at_once():
    steps = wait_steps(["a"], timeout=10, clock=Clock())
    next(steps)
    with pytest.raises(JobNotFound, match="finished, but its result expired"):
        steps.send([[b"finished", b"q"], None])


def test_a_job_whose_id_says_it_should_still_be_there_is_reported_lost():
    fresh, old = new_job_id(3600), f"{int(time.time()) - 7200:08x}{3600:06x}{'0' * 18}"
    steps = wait_steps([fresh, old], timeout=10, clock=Clock())
    next(steps)
    with pytest.raises(JobLost, match=rf"job {fresh} was enqueued [01] s ago and its records are gone"):
        steps.send([[None, None], [None, None], None])
    steps = wait_steps([old], timeout=10, clock=Clock())
    next(steps)
    with pytest.raises(JobNotFound, match="never enqueued, or expired after RESULT_TTL") as raised:
        steps.send([[None, None], None])
    assert not isinstance(raised.value, JobLost)
    assert job_lifetime(fresh)[1] == 3600 and job_lifetime("rq-style-id") is None


def test_a_job_queued_for_a_whole_slice_but_in_no_queue_is_reported_lost():
    steps = wait_steps(["a"], timeout=60, clock=Clock())
    next(steps)
    assert [name for name, _, _ in steps.send([[b"queued", b"q"], None]).commands] == ["xread"]  # a slice
    assert [name for name, _, _ in steps.send([None]).commands] == ["hmget", "xread"]  # no news: check again
    look = steps.send([[b"queued", b"q"], None])  # still queued: is it in rq:queue:q?
    assert [(name, args) for name, args, _ in look.commands] == [
        ("lpos", ("rq:queue:q", "a")),
        ("hget", ("rq:job:a", "status")),
    ]
    assert [name for name, _, _ in steps.send([3, b"queued"]).commands] == ["xread"]  # it is: wait on
    steps.send([None])
    steps.send([[b"queued", b"q"], None])
    with pytest.raises(JobLost, match="job a is queued but in no queue: Redis dropped it from q's list"):
        steps.send([None, b"queued"])


def test_a_redis_outage_is_waited_out_until_the_deadline_then_named():
    clock = Clock()
    steps = wait_steps(["a"], timeout=1, clock=clock)
    next(steps)
    pause = steps.send(Outage(ConnectionError("refused"), "redis://127.0.0.1:1/0"))
    assert isinstance(pause, Pause) and pause.seconds == 0.25
    clock.now = 2.0
    with pytest.raises(JobTimeout, match=r"job a did not finish within 1 s \(Redis did not answer: refused\)"):
        steps.send(None)


def test_status_without_redis_is_queue_unavailable():
    steps = status_steps("a")
    next(steps)
    with pytest.raises(QueueUnavailable, match="Redis at redis://x did not answer"):
        steps.send(Outage(ConnectionError("refused"), "redis://x"))


def failed_job(reason: str) -> tuple[EmbedClient, Job]:
    """A client and one of its jobs, failed as rq fails a job no worker is running."""
    connection = fakeredis.FakeRedis()
    client = EmbedClient(queue="waiting", connection=connection)
    job = Queue("waiting", connection=connection, serializer=MsgpackSerializer).fetch_job(client.submit(["fails"]))
    assert job is not None
    with connection.pipeline() as pipe:
        fail(job, reason, pipe)
        pipe.execute()
    return client, job


def test_rqs_own_failure_record_is_read_back_as_the_reason():
    client, job = failed_job("Traceback ...\nInvalidInput: texts[0] is too odd")
    job_id = job.id
    assert client.status(job_id) == "failed"
    with pytest.raises(JobFailed, match=r"failed: InvalidInput: texts\[0\] is too odd"):
        client.result(job_id)
    with pytest.raises(JobFailed, match="too odd"):
        client.wait(job_id, timeout=5)


def test_an_old_failure_of_a_job_requeued_since_is_not_its_outcome():
    client, job = failed_job("Traceback ...\nRuntimeError: the first try")
    job_id = job.id
    job.requeue()  # what `rq requeue` does
    assert client.status(job_id) == "queued"
    with pytest.raises(JobTimeout):
        client.wait(job_id, timeout=0.3)
    assert client.result(job_id) is None


def test_a_written_result_is_returned_without_blocking():
    connection = fakeredis.FakeRedis()
    client = EmbedClient(queue="waiting", connection=connection)
    job_id = client.submit(["done"])
    vectors = np.arange(4, dtype=np.float32).reshape(1, 4)
    connection.hset(job_key(job_id), "status", "finished")
    connection.xadd(result_stream_key(job_id), success_entry(job_id, vectors)[1])
    assert client.status(job_id) == "finished"
    np.testing.assert_array_equal(client.result(job_id).embeddings, vectors)
    sends = []
    send = client._send
    client._send = lambda step: sends.append(step) or send(step)
    result = client.wait_many([job_id], timeout=5)
    np.testing.assert_array_equal(result[0].embeddings, vectors)
    assert len(sends) == 1
