"""STS Benchmark test pairs embedded through the queue reproduce all-MiniLM-L6-v2's published score."""

import numpy as np
import pytest

from embedq.worker.model.quality import cosine_spearman, load_stsb, spearman

PUBLISHED = 82.03  # MTEB, STSBenchmark test, cosine Spearman


@pytest.mark.unit
def test_spearman_matches_its_definition_with_ties():
    assert spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0, 40.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1, 2, 3, 4)
    assert spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(
        0.9486833, abs=1e-6
    )


def test_stsb_through_the_queue_scores_the_published_figure(service, stsb):
    first, second, gold = load_stsb(stsb)
    assert len(gold) == 1379
    sentences = list(dict.fromkeys(first + second))
    batches = [sentences[i : i + 64] for i in range(0, len(sentences), 64)]
    client = service.client
    job_ids = client.submit_many(batches)
    vectors = np.concatenate([client.wait(job_id, timeout=120).embeddings for job_id in job_ids])
    row = {sentence: index for index, sentence in enumerate(sentences)}
    score = cosine_spearman(vectors[[row[s] for s in first]], vectors[[row[s] for s in second]], gold)
    print(
        f"STS-B test cosine Spearman through the queue: {score:.4f} ({len(sentences)} sentences, {len(job_ids)} jobs)"
    )
    assert abs(score - PUBLISHED) <= 0.01
