"""Queues as operators see them: two queues on one Redis keep their own counts, and rq's own
readers (rq info, rq requeue, Job.fetch, the registries) work on embedq's jobs without ever
showing a user's text."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry

from embedq import EmbedClient, JobFailed
from embedq.broker.jobs import EMBED_TASK, MsgpackSerializer
from embedq.local.service import LocalService
from embedq.worker.supervisor.spawn import embedq_command, settings_env
from tests.conftest import make_settings

RQ = str(Path(sys.executable).with_name("rq"))
SERIALIZER = "embedq.producer.protocol.MsgpackSerializer"
SECRET = "sk-live-4f9c2b7e1d Patient Jane Roe, DOB 1970-01-01"


def test_two_queues_on_one_redis_keep_their_own_counts_workers_and_stats(redis_url, model_dir, tmp_path):
    first = make_settings(redis_url, model_dir, queue=f"first-{uuid.uuid4().hex[:6]}")
    second = make_settings(redis_url, model_dir, queue=f"second-{uuid.uuid4().hex[:6]}")
    with (
        LocalService(first, workers=1, log_path=tmp_path / "first.log") as a,
        LocalService(second, workers=1, log_path=tmp_path / "second.log") as b,
    ):
        for job_id in a.client.submit_many([["one"], ["two", "three"], ["four"]]):
            a.client.wait(job_id, timeout=60)
        for job_id in b.client.submit_many([["five"]] * 5):
            b.client.wait(job_id, timeout=60)
        stats_a, stats_b = a.client.stats(), b.client.stats()
        assert (stats_a["counters"]["jobs"], stats_a["counters"]["texts"]) == (3, 4)
        assert (stats_b["counters"]["jobs"], stats_b["counters"]["texts"]) == (5, 5)
        assert [w["queue"] for w in stats_a["workers"]] == [first.queue]
        assert [w["queue"] for w in stats_b["workers"]] == [second.queue]
        assert [s["queue"] for s in stats_a["supervisors"]] == [first.queue]
        cli = subprocess.run(
            [*embedq_command(), "stats", "--json", "--queue", second.queue],
            capture_output=True,
            text=True,
            env=settings_env(first),
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["counters"]["jobs"] == 5


def test_rq_readers_work_on_our_jobs_and_never_show_a_users_text(service, redis_url, model_dir, tmp_path):
    # A queue no worker serves yet, so the job can be looked at, failed, requeued and looked at again.
    settings = make_settings(redis_url, model_dir, queue=f"readers-{uuid.uuid4().hex[:6]}", retries=0)
    client = EmbedClient(settings=settings)
    job_id = client.submit([SECRET], dimensions=999)  # no worker has published a model here: refused by the worker

    job = Job.fetch(job_id, connection=client.connection, serializer=MsgpackSerializer)  # plain rq, our serializer
    assert (job.func_name, job.get_status(), job.description) == (EMBED_TASK, "queued", "embed 1 texts")
    info = subprocess.run(
        [RQ, "info", "-u", redis_url, "-S", SERIALIZER, settings.queue], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stderr
    assert settings.queue in info.stdout and SECRET not in info.stdout

    env = {**settings_env(settings), "EMBEDQ_LOG_LEVEL": "DEBUG"}
    burst = subprocess.run(
        [*embedq_command(), "worker", "--burst"], capture_output=True, text=True, env=env, timeout=180
    )
    assert burst.returncode == 0, burst.stderr
    with pytest.raises(JobFailed, match="dimensions=999 is more than the model's 384"):
        client.wait(job_id, timeout=10)
    queue = Queue(settings.queue, connection=client.connection, serializer=MsgpackSerializer)
    assert FailedJobRegistry(queue=queue).get_job_ids() == [job_id]
    assert SECRET.split()[0] not in burst.stdout + burst.stderr, "a user's text reached the worker's log"

    requeue = subprocess.run(
        [RQ, "requeue", "--all", "--queue", settings.queue, "-u", redis_url, "-S", SERIALIZER],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert requeue.returncode == 0, requeue.stderr
    assert FailedJobRegistry(queue=queue).count == 0
    assert queue.job_ids == [job_id] and client.status(job_id) == "queued"
    queue.empty()

    done = service.client.submit([SECRET])
    service.client.wait(done, timeout=30)
    finished = Queue(service.settings.queue, connection=client.connection, serializer=MsgpackSerializer)
    assert done in FinishedJobRegistry(queue=finished).get_job_ids()
    assert SECRET.split()[0] not in service.output()
    assert SECRET.split()[0] not in str(
        Job.fetch(done, connection=client.connection, serializer=MsgpackSerializer).description
    )
