"""Priority lanes: interactive work goes first, is served between the micro-batches of a bulk pass,
and has its own length limit, so a bulk load never makes an interactive submit fail."""

from __future__ import annotations

import fakeredis
import numpy as np
import pytest
from rq.job import Job

from embedq import EmbedClient, QueueFull
from embedq.broker.jobs import MsgpackSerializer
from embedq.broker.rq_private.records import job_key
from embedq.local.service import LocalService
from tests.conftest import counter, lanes, make_settings, wait_until

LONG = "Embeddings turn text into vectors so that similar meanings land close together. " * 20


@pytest.mark.unit
def test_each_lane_has_its_own_limit_and_a_full_bulk_lane_leaves_interactive_room():
    client = EmbedClient(queue="lanes", connection=fakeredis.FakeRedis())
    client.settings = client.settings.model_copy(update={"max_queue_length": 2, "max_bulk_queue_length": 30})
    client.submit_many([["bulk"]] * 30, priority="bulk")
    with pytest.raises(
        QueueFull, match=r"queue 'lanes-bulk' holds 30 jobs; 1 more would pass MAX_BULK_QUEUE_LENGTH=30"
    ):
        client.submit(["one more"], priority="bulk")
    client.submit_many([["interactive"]] * 2)
    with pytest.raises(QueueFull, match=r"queue 'lanes' holds 2 jobs; 1 more would pass MAX_QUEUE_LENGTH=2"):
        client.submit(["one more"])
    assert (lanes(client)["interactive"].count, lanes(client)["bulk"].count) == (2, 30)


def ended(client: EmbedClient, job_id: str) -> float:
    job = Job.fetch(job_id, connection=client.connection, serializer=MsgpackSerializer)
    assert job.ended_at is not None
    return job.ended_at.timestamp()


def test_interactive_jobs_waiting_go_before_bulk_jobs_queued_earlier(redis_url, model_dir, tmp_path):
    settings = make_settings(redis_url, model_dir, coalesce_texts=32)
    with LocalService(settings, workers=1, log_path=tmp_path / "log") as solo:
        client = solo.client
        client.connection.set("rq:suspended", 1)  # rq's own `rq suspend`: the worker takes nothing
        try:
            bulk = client.submit_many([[f"bulk {i} line {j}" for j in range(32)] for i in range(8)], priority="bulk")
            interactive = client.submit_many([[f"query {i}"] for i in range(5)])
        finally:
            client.connection.delete("rq:suspended")
        client.wait_many(interactive + bulk, timeout=120)
    last_interactive = max(ended(client, job_id) for job_id in interactive)
    bulk_before = sum(ended(client, job_id) < last_interactive for job_id in bulk)
    assert bulk_before <= 1, (
        f"{bulk_before} bulk jobs finished before the interactive ones (one pass may be bulk's share)"
    )


def test_an_interactive_job_is_served_between_the_micro_batches_of_a_bulk_pass(redis_url, model_dir, tmp_path, encoder):
    settings = make_settings(redis_url, model_dir, max_batch_tokens=512)
    with LocalService(settings, workers=1, log_path=tmp_path / "log") as solo:
        client = solo.client
        solo.wait_for_workers(1)
        bulk = client.submit([f"{i}: {LONG}" for i in range(128)], priority="bulk")  # 64 micro-batches of 2
        wait_until(lambda: client.connection.hget(job_key(bulk), "status") == b"started", 30, "the bulk pass starting")
        query = client.embed(["a question while bulk work runs"], timeout=60)
        assert client.status(bulk) == "started", "the interactive job did not wait for the bulk pass to end"
        np.testing.assert_allclose(query, encoder.encode(["a question while bulk work runs"]).vectors, atol=1e-5)
        assert client.wait(bulk, timeout=120).embeddings.shape == (128, 384)
        assert counter(client, "jobs", lanes=("interactive",)) == 1
        assert counter(client, "jobs", lanes=("bulk",)) == 1
