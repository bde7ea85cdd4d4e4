"""The quality yardstick: STS Benchmark cosine Spearman (all-MiniLM-L6-v2 scores 82.03 on the test set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedq.errors import InvalidSettings


def load_stsb(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Sentence pairs and gold scores from an STS Benchmark file (tab-separated, no quoting)."""
    if not path.is_file():
        raise InvalidSettings(f"no STS Benchmark test file at {path}: pass --stsb PATH or set EMBEDQ_STSB")
    first, second, scores = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 7:
            scores.append(float(fields[4]))
            first.append(fields[5])
            second.append(fields[6])
    return first, second, np.array(scores)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation, ties given their average rank (as scipy.stats.spearmanr)."""
    return float(np.corrcoef(_average_ranks(np.asarray(x)), _average_ranks(np.asarray(y)))[0, 1])


def cosine_spearman(first: np.ndarray, second: np.ndarray, gold: np.ndarray) -> float:
    """×100, as MTEB reports it."""
    cosines = (first * second).sum(axis=1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1))
    return 100.0 * spearman(cosines, gold)


SPLIT_SEED = 0  # calibration half / held-out half
HELD_OUT_SEED = 1  # the held-out half cut in two disjoint splits, each judged on its own


@dataclass(frozen=True)
class StsbSplit:
    """The STS-B test sentences split in two with a fixed seed: a quantized copy is calibrated on one
    half and judged on the other, so it is never scored on text it has seen."""

    calibration: list[str]
    evaluation: list[str]
    first: list[str]  # the pairs whose both sentences are in the evaluation half
    second: list[str]
    gold: np.ndarray

    def held_out_splits(self, seed: int = HELD_OUT_SEED) -> dict[str, np.ndarray]:
        """The evaluation half cut in two disjoint splits (fixed seed), as row indices into `evaluation`:
        a copy must meet the goals on both, so one lucky draw of text cannot pass it."""
        order = np.random.default_rng(seed).permutation(len(self.evaluation))
        half = len(order) // 2
        return {"A": np.sort(order[:half]), "B": np.sort(order[half:])}


def split_stsb(path: Path, seed: int = SPLIT_SEED) -> StsbSplit:
    first, second, gold = load_stsb(path)
    sentences = list(dict.fromkeys(first + second))
    order = np.random.default_rng(seed).permutation(len(sentences))
    half = len(sentences) // 2
    calibration = [sentences[i] for i in sorted(order[:half])]
    evaluation = [sentences[i] for i in sorted(order[half:])]
    held_out = set(evaluation)
    kept = [i for i, (a, b) in enumerate(zip(first, second)) if a in held_out and b in held_out]
    return StsbSplit(calibration, evaluation, [first[i] for i in kept], [second[i] for i in kept], gold[kept])


def agreement(
    reference: np.ndarray, candidate: np.ndarray, *, queries: int | None = None, k: int = 10
) -> dict[str, float]:
    """How far `candidate` vectors (rows: the same texts, L2-normalized) are from `reference`'s: per-text
    cosine (minimum, 1st percentile, median) and the share of each query's top-k nearest neighbours among
    the other texts that both agree on. Queries: every text (None), or `queries` drawn with a fixed seed."""
    cosines = (reference * candidate).sum(axis=1)
    count = len(reference) if queries is None else min(queries, len(reference))
    picked = np.random.default_rng(SPLIT_SEED).choice(len(reference), size=count, replace=False)

    def neighbours(vectors: np.ndarray) -> np.ndarray:
        scores = vectors[picked] @ vectors.T
        scores[np.arange(len(picked)), picked] = -np.inf  # the query itself is not its own neighbour
        return np.argsort(-scores, axis=1)[:, :k]

    shared = [len(set(a) & set(b)) for a, b in zip(neighbours(reference), neighbours(candidate))]
    return {
        "cosine_min": float(cosines.min()),
        "cosine_p1": float(np.percentile(cosines, 1)),
        "cosine_median": float(np.median(cosines)),
        "neighbour_overlap": float(np.mean(shared) / k),
    }
