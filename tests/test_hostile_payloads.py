"""Bytes pushed into Redis by hand, bypassing the client: each job fails with a clear reason,
nothing named in it is imported or executed, and the worker keeps serving the next job."""

import pickle
import textwrap
import zlib
from pathlib import Path

import msgpack
import numpy as np
import pytest
from rq import Queue, Retry
from rq.job import Job

from embedq import JobFailed
from embedq.broker.jobs import EMBED_TASK, MsgpackSerializer
from embedq.config.settings import Limits
from embedq.local.service import LocalService
from tests.conftest import counter, make_settings


@pytest.fixture(scope="module")
def canary_dir(tmp_path_factory):
    """A module that leaves a file behind if anything ever imports or calls it."""
    directory = tmp_path_factory.mktemp("canary")
    (directory / "embedq_canary.py").write_text(
        textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(directory / "imported")!r}).touch()

        def run(*args, **kwargs):
            pathlib.Path({str(directory / "called")!r}).touch()
    """)
    )
    return directory


@pytest.fixture(scope="module")
def service(redis_url, model_dir, canary_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(canary_dir))  # the workers could import the canary, if they ever tried
        settings = make_settings(redis_url, model_dir, max_texts_per_job=8, max_chars_per_text=100)
        log = tmp_path_factory.mktemp("hostile") / "supervisor.log"
        with LocalService(settings, workers=2, log_path=log) as running:
            yield running


def push_raw(service, data: bytes, retries: int = 0, **fields: str) -> str:
    """A job whose stored bytes are `data`, as anyone who can write to Redis could make it."""
    queue = Queue(service.settings.queue, connection=service.client.connection, serializer=MsgpackSerializer)
    with service.client.connection.pipeline() as pipe:  # one MULTI: no worker ever sees the placeholder
        job = queue.enqueue_call(
            EMBED_TASK,
            args=({"v": 1, "texts": ["placeholder"]},),
            pipeline=pipe,
            retry=Retry(max=retries) if retries else None,
        )
        pipe.hset(job.key, mapping={"data": data, **fields})
        pipe.execute()
    return job.id


def job_tuple(func: str, *args, **kwargs) -> bytes:
    return msgpack.packb([func, None, list(args), kwargs])


class Gadget:
    """Unpickling this (loading alone, nothing called afterwards) creates the file at `path`."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


HOSTILE = {
    "malformed msgpack": (b"\xc1\xc1 not msgpack", "job payload is not a msgpack embed job"),
    "msgpack but not a job": (msgpack.packb(42), "job payload is not a msgpack embed job"),
    "nested 5,000 deep": (b"\x91" * 5000 + b"\xc0", "StackError: nested deeper than msgpack's stack allows"),
    "wrong schema: unknown field": (job_tuple(EMBED_TASK, {"v": 1, "txts": ["a"]}), r"unknown fields: \['txts'\]"),
    "wrong schema: no texts": (job_tuple(EMBED_TASK, {"v": 1}), "texts must be a list of str, got NoneType"),
    "wrong schema: old version": (job_tuple(EMBED_TASK, {"v": 0, "texts": ["a"]}), "version must be 1, got 0"),
    "wrong schema: texts over the limit": (job_tuple(EMBED_TASK, {"v": 1, "texts": ["a"] * 9}), "MAX_TEXTS_PER_JOB=8"),
    "extra arguments": (job_tuple(EMBED_TASK, {"v": 1, "texts": ["a"]}, "extra"), "exactly one positional argument"),
    "pickle": (pickle.dumps(("embedq_canary.run", None, ("x",), {})), "job payload is not a msgpack embed job"),
    "another function": (
        job_tuple("embedq_canary.run", "x"),
        "ForbiddenTask: refusing job .* it names 'embedq_canary.run'",
    ),
    "os.system": (job_tuple("os.system", "touch /tmp/embedq-pwned"), "ForbiddenTask: .* it names 'os.system'"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_payload_fails_cleanly_and_nothing_runs(service, canary_dir, case):
    data, reason = HOSTILE[case]
    workers_before = {w["pid"] for w in service.live_workers()}
    job_id = push_raw(service, data)
    with pytest.raises(JobFailed, match=reason):
        service.client.wait(job_id, timeout=30)
    assert not (canary_dir / "imported").exists() and not (canary_dir / "called").exists()
    assert service.client.embed(["the next job is served"], timeout=30).shape == (1, 384)
    assert {w["pid"] for w in service.live_workers()} == workers_before, "no worker died"


def test_a_payload_over_the_size_limit_is_refused_before_it_is_parsed(service):
    limit = Limits(8, 100).max_payload_bytes
    job_id = push_raw(service, b"\x00" * (limit + 1))
    with pytest.raises(JobFailed, match=f"job payload is more than the {limit}-byte limit"):
        service.client.wait(job_id, timeout=30)


def peak_rss_mb(pid: str) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def zlib_bomb(gigabytes: float) -> bytes:
    """What rq would store for a job whose data is `gigabytes` of zeros (~1 MB per GB)."""
    squeeze = zlib.compressobj(9)
    chunk = b"\0" * 2**24
    return b"".join(squeeze.compress(chunk) for _ in range(int(gigabytes * 64))) + squeeze.flush()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: zlib_bomb(0.065), f"job payload is more than the {Limits(8, 100).max_payload_bytes}-byte limit"),
        (lambda: zlib_bomb(1.0), "job data is 10\\d{5} bytes in Redis, .* refused unread"),
        (lambda: b"\x01" * 200_000_000, "job data is 200000000 bytes in Redis, .* refused unread"),
    ],
    ids=["zlib bomb: 65 KB that inflates to 67 MB", "zlib bomb: 1 MB that inflates to 1 GB", "200 MB stored raw"],
)
def test_huge_job_data_is_refused_in_bounded_memory(service, make, reason):
    workers = [worker["pid"] for worker in service.live_workers()]
    peaks = [peak_rss_mb(pid) for pid in workers]
    job_id = push_raw(service, make())
    with pytest.raises(JobFailed, match=reason):
        service.client.wait(job_id, timeout=60)
    growth = max(peak_rss_mb(pid) - before for pid, before in zip(workers, peaks))
    assert growth < 50, f"a worker's peak RSS grew by {growth:.0f} MB"
    assert service.client.embed(["the next job is served"], timeout=30).shape == (1, 384)


def test_callbacks_named_in_the_job_hash_are_ignored(service, canary_dir):
    job_id = push_raw(
        service,
        job_tuple(EMBED_TASK, {"v": 1, "texts": [None]}),
        failure_callback_name="embedq_canary.run",
        success_callback_name="embedq_canary.run",
    )
    with pytest.raises(JobFailed, match=r"texts\[0\] must be a str"):
        service.client.wait(job_id, timeout=30)
    good = push_raw(
        service, job_tuple(EMBED_TASK, {"v": 1, "texts": ["fine"]}), success_callback_name="embedq_canary.run"
    )
    assert service.client.wait(good, timeout=30).embeddings.shape == (1, 384)
    assert not (canary_dir / "imported").exists() and not (canary_dir / "called").exists()


@pytest.mark.parametrize(
    "data",
    [job_tuple("os.system", "true"), job_tuple(EMBED_TASK, {"v": 1, "texts": [7]})],
    ids=["forbidden task", "invalid input"],
)
def test_hostile_jobs_are_not_retried(service, data):
    failed_before = counter(service.client, "failed_attempts")
    job_id = push_raw(service, data, retries=2)
    with pytest.raises(JobFailed):
        service.client.wait(job_id, timeout=30)
    job = Job.fetch(job_id, connection=service.client.connection, serializer=MsgpackSerializer)
    assert job.retries_left == 2, "no retry was used"
    assert counter(service.client, "failed_attempts") - failed_before == 1, "the job ran exactly once"


def test_a_pickle_whose_loading_alone_would_create_a_file_is_refused(service, tmp_path):
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Gadget(control)))  # the gadget is live: loading it creates the file
    assert control.exists()
    marker = tmp_path / "pwned"
    job_id = push_raw(service, pickle.dumps(Gadget(marker)))
    with pytest.raises(JobFailed, match="job payload is not a msgpack embed job"):
        service.client.wait(job_id, timeout=30)
    assert not marker.exists()


def test_jobs_queued_under_the_old_task_name_still_run(service, encoder):
    job_id = push_raw(service, job_tuple("worker.tasks.embed", {"v": 1, "texts": ["queued before the upgrade"]}))
    result = service.client.wait(job_id, timeout=30)
    np.testing.assert_allclose(result.embeddings, encoder.encode(["queued before the upgrade"]).vectors, atol=1e-5)
