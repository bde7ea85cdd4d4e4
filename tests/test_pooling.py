"""Pooling maths on hand-made arrays."""

import numpy as np
import pytest

from embedq.broker.vectors import l2_normalize, shape
from embedq.worker.model.pooling import cls_pool, last_token_pool, mean_pool

pytestmark = pytest.mark.unit

HIDDEN = np.array(
    [
        [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],  # last position is padding
        [[2.0, 0.0], [4.0, 2.0], [6.0, 4.0]],
    ],
    dtype=np.float32,
)
RIGHT_PADDED = np.array([[1, 1, 0], [1, 1, 1]])


def test_mean_pooling_ignores_padding():
    assert mean_pool(HIDDEN, RIGHT_PADDED).tolist() == [[2.0, 3.0], [4.0, 2.0]]


def test_mean_pooling_of_fp16_is_float32():
    pooled = mean_pool(HIDDEN.astype(np.float16), RIGHT_PADDED)
    assert pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, [[2.0, 3.0], [4.0, 2.0]])


def test_cls_pooling_takes_the_first_token():
    assert cls_pool(HIDDEN, RIGHT_PADDED).tolist() == [[1.0, 2.0], [2.0, 0.0]]


def test_last_token_pooling_with_right_padding():
    assert last_token_pool(HIDDEN, RIGHT_PADDED).tolist() == [[3.0, 4.0], [6.0, 4.0]]


def test_last_token_pooling_with_left_padding():
    hidden = np.array([[[0.0, 0.0], [5.0, 6.0], [7.0, 8.0]], [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    left_padded = np.array([[0, 1, 1], [1, 1, 1]])
    assert last_token_pool(hidden, left_padded).tolist() == [[7.0, 8.0], [3.0, 3.0]]


def test_l2_normalize_gives_unit_rows_and_survives_zero_vectors():
    vectors = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(vectors, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)


def test_matryoshka_truncation_renormalizes():
    vectors = l2_normalize(np.array([[1.0, 1.0, 1.0, 1.0]], dtype=np.float32))
    short = shape(vectors, 2, normalize=True)
    assert short.shape == (1, 2)
    assert np.linalg.norm(short) == pytest.approx(1.0)
    np.testing.assert_allclose(short, [[2**-0.5, 2**-0.5]], rtol=1e-6)


def test_truncation_without_normalize_keeps_raw_values():
    raw = np.array([[3.0, 4.0, 12.0]], dtype=np.float32)
    assert shape(raw, 2, normalize=False).tolist() == [[3.0, 4.0]]
    assert shape(raw, None, normalize=False).tolist() == [[3.0, 4.0, 12.0]]


@pytest.mark.parametrize("dimensions", [None, 5, 128, 383])
@pytest.mark.parametrize("normalize", [True, False])
def test_a_row_is_shaped_the_same_whatever_rows_share_its_batch(dimensions, normalize):
    """The cache's promise rests on this: a vector read back alone equals it shaped inside a batch, bit for bit."""
    rows = np.random.default_rng(0).standard_normal((300, 384)).astype(np.float32)
    together = shape(rows, dimensions, normalize)
    for start in range(0, 300, 7):
        alone = shape(rows[start : start + 1].copy(), dimensions, normalize)
        assert alone.tobytes() == together[start : start + 1].tobytes()
        assert (
            shape(rows[start : start + 5].copy(), dimensions, normalize).tobytes()
            == together[start : start + 5].tobytes()
        )
