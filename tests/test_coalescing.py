"""Coalescing: a worker that finds jobs waiting embeds them in one pass, each job keeping its own
status, result and failure."""

import numpy as np
import pytest
from rq import Queue

from embedq import JobFailed
from embedq.broker.jobs import EMBED_TASK, MsgpackSerializer, validate_request
from embedq.local.service import LocalService
from tests.conftest import counter, make_settings
from tests.test_hostile_payloads import job_tuple, push_raw


def test_waiting_single_text_jobs_share_passes_and_match_single_job_vectors(service, encoder):
    texts = [f"search query number {i} about {['cats', 'stocks', 'python', 'weather'][i % 4]}" for i in range(120)]
    client = service.client
    jobs_before, passes_before = counter(client, "jobs"), counter(client, "passes")
    job_ids = client.submit_many([[text] for text in texts])
    results = [client.wait(job_id, timeout=60) for job_id in job_ids]
    passes = counter(client, "passes") - passes_before
    print(f"120 single-text jobs in {passes} passes")
    assert counter(client, "jobs") - jobs_before == 120
    assert 4 <= passes <= 30, "a queue full of small jobs is embedded in shared passes, shared out between workers"
    for text, result in zip(texts, results):
        assert result.embeddings.shape == (1, 384)
        np.testing.assert_allclose(result.embeddings, encoder.encode([text]).vectors, atol=1e-5)


def test_options_stay_per_job_inside_a_shared_pass(redis_url, model_dir, encoder, tmp_path):
    # One worker, and the four jobs land in the queue in one transaction: it takes them in one pass.
    with LocalService(make_settings(redis_url, model_dir), workers=1, log_path=tmp_path / "log") as solo:
        client = solo.client
        options = [{}, {}, {"dimensions": 16}, {"normalize": False}]
        requests = [
            validate_request([text], limits=client.limits, **option)
            for text, option in zip(["alpha", "beta", "gamma", "delta"], options)
        ]
        passes_before, jobs_before = counter(client, "passes"), counter(client, "jobs")
        queue = Queue(client.settings.queue, connection=client.connection, serializer=MsgpackSerializer)
        # rq's own enqueue rings no doorbell: the idle worker finds them when it next looks (1 s at most)
        jobs = queue.enqueue_many([Queue.prepare_data(EMBED_TASK, args=(r.to_payload(),)) for r in requests])
        results = [client.wait(job.id, timeout=30).embeddings for job in jobs]
        assert counter(client, "passes") - passes_before == 1
        assert counter(client, "jobs") - jobs_before == 4, "the four jobs shared one pass"
    assert results[2].shape == (1, 16)
    np.testing.assert_allclose(results[0], encoder.encode(["alpha"]).vectors, atol=1e-5)
    np.testing.assert_allclose(results[2], encoder.encode(["gamma"], dimensions=16).vectors, atol=1e-5)
    np.testing.assert_allclose(results[3], encoder.encode(["delta"], normalize=False).vectors, atol=1e-4)
    assert not np.allclose(np.linalg.norm(results[3]), 1.0, atol=1e-3)


def test_one_bad_job_does_not_fail_its_neighbours(service):
    good_before = service.client.submit_many([[f"neighbour {i}"] for i in range(10)])
    bad_ids = [
        push_raw(service, job_tuple(EMBED_TASK, {"v": 1, "texts": [7]})),
        push_raw(service, job_tuple(EMBED_TASK, {"v": 1, "texts": ["x"], "dimensions": 999})),
        push_raw(service, job_tuple("os.system", "true")),
    ]
    good_after = service.client.submit_many([[f"neighbour {i}"] for i in range(10, 20)])
    reasons = []
    for job_id in bad_ids:
        with pytest.raises(JobFailed) as failure:
            service.client.wait(job_id, timeout=30)
        reasons.append(failure.value.reason)
    assert "texts[0] must be a str" in reasons[0]
    assert "dimensions=999 is more than the model's 384" in reasons[1]
    assert "ForbiddenTask" in reasons[2]
    for job_id in good_before + good_after:
        assert service.client.wait(job_id, timeout=30).embeddings.shape == (1, 384)
