"""Token vectors → one vector per text (pure numpy): mean / cls / last-token pooling. What reshapes a
pooled vector afterwards (dimensions, the L2 norm) is broker/vectors.py, shared with the cache's readers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average of the token vectors the attention mask keeps (padding excluded)."""
    weights = mask.astype(np.float32)[:, :, None]
    summed = (hidden.astype(np.float32) * weights).sum(axis=1)
    pooled: np.ndarray = summed / np.maximum(weights.sum(axis=1), 1e-9)
    return pooled


def cls_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The first token's vector (BERT's [CLS]); assumes right padding, as encoder models use."""
    return hidden[:, 0, :].astype(np.float32)


def last_token_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The last real token's vector, found from the mask, so left and right padding both work."""
    seq_len = mask.shape[1]
    last = seq_len - 1 - np.argmax(mask[:, ::-1] > 0, axis=1)
    return hidden[np.arange(hidden.shape[0]), last, :].astype(np.float32)


POOLERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean": mean_pool,
    "cls": cls_pool,
    "lasttoken": last_token_pool,
}
