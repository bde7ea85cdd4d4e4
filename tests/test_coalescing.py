"""Coalescing: a worker that finds jobs waiting embeds them in one pass, each job keeping its own
status, result and failure."""

import numpy as np
import pytest

from embedq.producer import JobFailed
from embedq.producer.protocol import EMBED_TASK, METRICS_KEY
from tests.test_hostile_payloads import job_tuple, push_raw


def counter(service, name: str) -> int:
    return int(float(service.client.connection.hget(METRICS_KEY, name) or 0))


def test_waiting_single_text_jobs_share_passes_and_match_single_job_vectors(service, encoder):
    texts = [f"search query number {i} about {['cats', 'stocks', 'python', 'weather'][i % 4]}" for i in range(120)]
    passes_before, coalesced_before = counter(service, "coalesced_passes"), counter(service, "coalesced_jobs")
    job_ids = service.client.submit_many([[text] for text in texts])
    results = [service.client.wait(job_id, timeout=60) for job_id in job_ids]
    passes = counter(service, "coalesced_passes") - passes_before
    coalesced = counter(service, "coalesced_jobs") - coalesced_before
    print(f"120 single-text jobs: {coalesced} coalesced in {passes} passes")
    assert passes >= 1 and coalesced >= 60, "a queue full of small jobs should be embedded in shared passes"
    for text, result in zip(texts, results):
        assert result.embeddings.shape == (1, 384)
        np.testing.assert_allclose(result.embeddings, encoder.encode([text]).vectors, atol=1e-5)


def test_options_stay_per_job_inside_a_shared_pass(service, encoder):
    client = service.client
    ids = client.submit_many([["alpha"], ["beta"]]) + [client.submit(["gamma"], dimensions=16),
                                                       client.submit(["delta"], normalize=False)]
    short, raw = client.wait(ids[2], timeout=30).embeddings, client.wait(ids[3], timeout=30).embeddings
    assert short.shape == (1, 16)
    np.testing.assert_allclose(short, encoder.encode(["gamma"], dimensions=16).vectors, atol=1e-5)
    np.testing.assert_allclose(raw, encoder.encode(["delta"], normalize=False).vectors, atol=1e-4)


def test_one_bad_job_does_not_fail_its_neighbours(service):
    good_before = service.client.submit_many([[f"neighbour {i}"] for i in range(10)])
    bad_ids = [push_raw(service, job_tuple(EMBED_TASK, {"v": 1, "texts": [7]})),
               push_raw(service, job_tuple(EMBED_TASK, {"v": 1, "texts": ["x"], "dimensions": 999})),
               push_raw(service, job_tuple("os.system", "true"))]
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
