"""What `embedq stats` shows: queue depth, live workers, counters and timing percentiles."""

from __future__ import annotations

from typing import Any

import numpy as np
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, StartedJobRegistry

from embedq.producer.protocol import (
    SUPERVISOR_KEY_PATTERN,
    TIMING_FIELDS,
    WORKER_KEY_PATTERN,
    metrics_key,
    timings_key,
)

PERCENTILE_WINDOW = 1000  # most recent jobs the percentiles are computed over


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _facts(connection: Redis, pattern: str, queue: str) -> list[dict[str, str]]:
    """The facts hashes under `pattern` of the processes serving `queue`."""
    found = []
    for key in sorted(connection.scan_iter(match=pattern, count=500)):
        facts = {_text(k): _text(v) for k, v in connection.hgetall(key).items()}
        if facts.get("queue") == queue:
            found.append({"name": _text(key).split(":", 2)[2], **facts})
    return found


def collect_stats(connection: Redis, queue: Queue) -> dict[str, Any]:
    workers = _facts(connection, WORKER_KEY_PATTERN, queue.name)
    supervisors = _facts(connection, SUPERVISOR_KEY_PATTERN, queue.name)
    counters = {_text(k): float(v) for k, v in connection.hgetall(metrics_key(queue.name)).items()}
    records: list[tuple[bytes, dict[bytes, bytes]]] = connection.xrevrange(  # type: ignore[assignment]
        timings_key(queue.name), count=PERCENTILE_WINDOW
    )
    percentiles: dict[str, dict[str, float]] = {}
    for name in TIMING_FIELDS:
        values = np.array([float(fields[name.encode()]) for _, fields in records if name.encode() in fields])
        if values.size:
            p50, p95 = np.percentile(values, [50, 95])
            percentiles[name] = {"p50": float(p50), "p95": float(p95)}
    return {
        "queue": queue.name,
        "queued": queue.count,
        "running": StartedJobRegistry(queue=queue).count,
        "failed": FailedJobRegistry(queue=queue).count,
        "workers": workers,
        "supervisors": supervisors,
        "counters": counters,
        "percentiles_over_last": len(records),
        "percentiles": percentiles,
    }


def format_stats(stats: dict[str, Any]) -> str:
    lines = [
        f"queue {stats['queue']}: {stats['queued']} queued, {stats['running']} running, {stats['failed']} failed",
        f"workers alive: {len(stats['workers'])}",
    ]
    for worker in stats["workers"]:
        lines.append(
            f"  {worker['name']}  model={worker.get('model')} dim={worker.get('dim')} "
            f"providers={worker.get('providers')} threads={worker.get('threads')} jobs_done={worker.get('jobs_done')}"
        )
    for supervisor in stats["supervisors"]:
        lines.append(
            f"supervisor {supervisor['name']}: {supervisor.get('workers')} workers, "
            f"{supervisor.get('restarts')} restarts, "
            f"{supervisor.get('recovered_jobs')} jobs handed back, {supervisor.get('given_up')} slots given up"
        )
    counters = stats["counters"]
    lines.append(
        "done: {jobs:.0f} jobs, {texts:.0f} texts, {tokens:.0f} tokens ({truncated:.0f} texts truncated), "
        "{failed:.0f} failed attempts".format(
            jobs=counters.get("jobs", 0),
            texts=counters.get("texts", 0),
            tokens=counters.get("tokens", 0),
            truncated=counters.get("truncated", 0),
            failed=counters.get("failed_attempts", 0),
        )
    )
    if stats["percentiles"]:
        lines.append(f"timings over the last {stats['percentiles_over_last']} jobs (ms):")
        for name, values in stats["percentiles"].items():
            lines.append(f"  {name:<12} p50 {values['p50']:9.2f}   p95 {values['p95']:9.2f}")
    return "\n".join(lines)
