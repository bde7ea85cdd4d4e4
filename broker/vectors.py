"""What only reshapes a model's vector: Matryoshka truncation to `dimensions`, then the L2 norm. One
function for the worker that computes a vector and the client that reads one from the cache, so an
answer from a cache entry is bitwise the answer given when the entry was filled (each row is shaped on
its own: the other rows of a batch never change it)."""

from __future__ import annotations

import numpy as np

NORM_EPSILON = 1e-12


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalized: np.ndarray = vectors / np.maximum(norms, NORM_EPSILON)
    return normalized


def shape(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Keep the first `dimensions` components (Matryoshka), then renormalize if asked."""
    if dimensions is not None and dimensions < vectors.shape[1]:
        vectors = vectors[:, :dimensions]
    return l2_normalize(vectors) if normalize else vectors
