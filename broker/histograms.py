"""The fleet's timing histograms: the fields a pass adds to `embedq:{queue}:timings`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

# Per-job timings kept as histograms, per lane: queue wait, the pass's inference, submit to result.
TIMINGS = ("queue_ms", "infer_ms", "total_ms")


# Bucket upper bounds in ms (Prometheus' `le`), from a warm short query (~3 ms) to a long bulk wait.
TIMING_BUCKETS_MS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)


def timing_field(lane: str, timing: str, le: float) -> str:
    """A histogram bucket's field: the count of timings at or under `le` ms (math.inf: the rest)."""
    return f"{lane}:{timing}:{'inf' if le == math.inf else f'{le:g}'}"


def timing_sum_field(lane: str, timing: str) -> str:
    return f"{lane}:{timing}:sum"


def timing_bucket(lane: str, timing: str, ms: float) -> str:
    """The histogram field a job's timing counts in (the first bound at or above it, else `inf`)."""
    return timing_field(lane, timing, next((b for b in TIMING_BUCKETS_MS if ms <= b), math.inf))


def timing_increments(lane: str, jobs: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """What a pass adds to the histograms for its jobs' timings: a count (int) per bucket, and sums."""
    added: dict[str, float] = {}
    for timings in jobs:
        for timing, ms in timings.items():
            bucket, total = timing_bucket(lane, timing, ms), timing_sum_field(lane, timing)
            added[bucket] = added.get(bucket, 0) + 1
            added[total] = added.get(total, 0.0) + ms
    return added
