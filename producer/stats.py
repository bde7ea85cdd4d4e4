"""What `embedq stats` shows: each lane's depth, live workers, counters, timing percentiles
(estimated from the fleet's histograms in Redis) and the cache's hits and size."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from embedq.broker.eviction import eviction_risk
from embedq.broker.histograms import TIMING_BUCKETS_MS, TIMINGS, timing_field, timing_sum_field
from embedq.broker.keys import (
    SUPERVISOR_KEY_PATTERN,
    WORKER_KEY_PATTERN,
    cache_stats_key,
    held_key,
    metrics_key,
    model_key,
    timings_key,
)
from embedq.broker.lanes import COUNTERS, LANES
from embedq.broker.rq_private import FailedJobRegistry, StartedJobRegistry
from embedq.broker.rq_private.queues import lane_queues
from embedq.broker.rq_private.records import last_heartbeat
from embedq.broker.shards import records_of, shard_queues


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_numbers(connection: Redis, key: str) -> dict[str, float]:
    """A hash of counters or histogram buckets (embedq:{queue}:metrics, :timings) as numbers."""
    return {as_text(k): float(v) for k, v in connection.hgetall(key).items()}


SILENT_AFTER = 45  # seconds without rq's heartbeat (every 15 s, none during a pass) that stats points out


def process_facts(connection: Redis, pattern: str, queue: str) -> list[dict[str, str]]:
    """The facts hashes under `pattern` of the processes serving `queue`."""
    found = []
    for key in sorted(connection.scan_iter(match=pattern, count=500)):
        facts = {as_text(k): as_text(v) for k, v in connection.hgetall(key).items()}
        if facts.get("queue") == queue:
            found.append({"name": as_text(key).split(":", 2)[2], **facts})
    return found


def queue_shards(connection: Redis, queue: str, cluster: bool = False) -> list[str]:
    """`queue`'s shards, as many as its workers said at their claim (the model facts' `shards`; 1 before)."""
    count = connection.hget(model_key(records_of(queue, cluster)), "shards")
    return shard_queues(queue, int(count or 1), cluster)


def with_silence(connection: Redis, workers: list[dict[str, Any]], shards: Sequence[str]) -> list[dict[str, Any]]:
    """Each worker's facts plus how long rq has not heard from it and how many jobs its pass holds."""
    for worker in workers:
        heard = last_heartbeat(connection, worker["name"])
        worker["silent_seconds"] = round(time.time() - heard, 1) if heard else None
        worker["holding"] = sum(int(connection.scard(held_key(worker["name"], shard))) for shard in shards)
    return workers


def histogram(fields: dict[str, float], lane: str, timing: str) -> tuple[list[tuple[float, float]], float]:
    """One timing's histogram: cumulative (upper bound ms, count) pairs ending at +inf, and the sum."""
    cumulative, total = [], 0.0
    for bound in (*TIMING_BUCKETS_MS, math.inf):
        total += fields.get(timing_field(lane, timing, bound), 0.0)
        cumulative.append((float(bound), total))
    return cumulative, fields.get(timing_sum_field(lane, timing), 0.0)


def quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """Estimated as Prometheus' histogram_quantile does: linear within the bucket it falls in."""
    count = cumulative[-1][1]
    if not count:
        return None
    rank, lower, below = q * count, 0.0, 0.0
    for bound, seen in cumulative:
        if seen >= rank:
            if bound == math.inf:
                return lower
            return lower + (bound - lower) * (rank - below) / max(seen - below, 1e-9)
        lower, below = bound, seen
    return lower


CACHE_NUMBERS = ("hits", "misses", "answered", "writes", "trimmed", "foreign", "bytes", "entries", "budget")


def summed(connection: Redis, keys: Sequence[str]) -> dict[str, float]:
    """Hashes of numbers (one per shard) added up field by field."""
    total: dict[str, float] = {}
    for key in keys:
        for name, value in read_numbers(connection, key).items():
            total[name] = total.get(name, 0.0) + value
    return total


def cache_stats(
    connection: Redis, queue: str, cache_connection: Redis | None = None, shards: Sequence[str] | None = None
) -> dict[str, float]:
    """The queue's cache: texts found and not (hits, misses) and the hit ratio, jobs answered without a
    worker, entries written, trimmed for the budget and refused as foreign, and the bytes and entries held
    against the budget (bytes as embedq counts them, Redis' own overhead included), summed over its
    `shards` (default: the queue alone; each shard's cache keeps a budget of its own). In a Redis of its
    own (`cache_connection`), which bounds it: its keys, used memory and maxmemory instead (none if away)."""
    numbers = summed(connection, [cache_stats_key(shard) for shard in shards or [queue]])
    found = {name: numbers.get(name, 0.0) for name in CACHE_NUMBERS}
    if cache_connection is not None:
        try:
            memory = cache_connection.info("memory")
            found.update(
                entries=float(cache_connection.dbsize()),
                bytes=float(memory.get("used_memory", 0)),
                budget=float(memory.get("maxmemory", 0)),
            )
        except (RedisError, OSError):
            found.update(entries=0.0, bytes=0.0, budget=0.0)
    looked = found["hits"] + found["misses"]
    found["hit_ratio"] = found["hits"] / looked if looked else 0.0
    return found


def percentiles_of(timings: dict[str, float], lane: str) -> dict[str, dict[str, float | None]]:
    """p50, p95 and mean of each timing of `lane` with any count, from its histograms."""
    percentiles = {}
    for timing in TIMINGS:
        cumulative, total = histogram(timings, lane, timing)
        if cumulative[-1][1]:
            percentiles[timing] = {
                "p50": quantile(cumulative, 0.5),
                "p95": quantile(cumulative, 0.95),
                "mean": total / cumulative[-1][1],
            }
    return percentiles


def collect_stats(
    connection: Redis, queue: str, cache_connection: Redis | None = None, shards: Sequence[str] | None = None
) -> dict[str, Any]:
    """What `embedq stats` shows of `queue`, its `shards` (default: the queue alone) added up; each
    shard's depth per lane under "shards"."""
    shards = list(shards or [queue])
    counters = summed(connection, [metrics_key(shard) for shard in shards])
    timings = summed(connection, [timings_key(shard) for shard in shards])
    by_shard = {shard: lane_queues(shard, connection) for shard in shards}
    lanes: dict[str, Any] = {}
    for lane in LANES:
        parts = [rq_lanes[lane] for rq_lanes in by_shard.values()]
        lanes[lane] = {
            "rq_queue": parts[0].name if len(parts) == 1 else f"{len(parts)} shards",
            "queued": sum(part.count for part in parts),
            "running": sum(StartedJobRegistry(queue=part).count for part in parts),
            "failed": sum(FailedJobRegistry(queue=part).count for part in parts),
            "counters": {name: counters.get(f"{lane}:{name}", 0.0) for name in COUNTERS},
            "percentiles": percentiles_of(timings, lane),
        }
    totals = {name: sum(lanes[lane]["counters"][name] for lane in LANES) for name in COUNTERS}
    totals["failed_attempts"] = counters.get("failed_attempts", 0.0)
    return {
        "queue": queue,
        "queued": sum(lanes[lane]["queued"] for lane in LANES),
        "running": sum(lanes[lane]["running"] for lane in LANES),
        "failed": sum(lanes[lane]["failed"] for lane in LANES),
        "workers": with_silence(connection, process_facts(connection, WORKER_KEY_PATTERN, queue), shards),
        "supervisors": process_facts(connection, SUPERVISOR_KEY_PATTERN, queue),
        "counters": totals,
        "lanes": lanes,
        "cache": cache_stats(connection, queue, cache_connection, shards),
        "shards": {
            shard: {lane: rq_queue.count for lane, rq_queue in rq_lanes.items()} for shard, rq_lanes in by_shard.items()
        },
        "eviction_risk": eviction_risk(connection),  # None: Redis keeps every key (maxmemory-policy noeviction)
    }


def format_stats(stats: dict[str, Any]) -> str:
    lines = [f"WARNING: {stats['eviction_risk']}"] if stats.get("eviction_risk") else []
    lines += [
        f"queue {stats['queue']}: {stats['queued']} queued, {stats['running']} running, {stats['failed']} failed",
        f"workers alive: {len(stats['workers'])}",
    ]
    for worker in stats["workers"]:
        silent = worker.get("silent_seconds") or 0
        lines.append(
            f"  {worker['name']}  model={worker.get('model')} dim={worker.get('dim')} "
            f"providers={worker.get('providers')} threads={worker.get('threads')} jobs_done={worker.get('jobs_done')}"
            + (
                f"  SILENT for {silent:.0f} s (hung, or in a long pass), holding {worker.get('holding')} jobs"
                if silent > SILENT_AFTER
                else ""
            )
        )
    for supervisor in stats["supervisors"]:
        lines.append(
            f"supervisor {supervisor['name']}: {supervisor.get('workers')} workers, "
            f"{supervisor.get('restarts')} restarts, "
            f"{supervisor.get('recovered_jobs')} jobs handed back, {supervisor.get('given_up')} slots given up"
        )
    counters = stats["counters"]
    lines.append(
        "done: {jobs:.0f} jobs in {passes:.0f} passes, {texts:.0f} texts, {tokens:.0f} tokens "
        "({truncated:.0f} texts truncated), {failed:.0f} failed attempts".format(
            failed=counters.get("failed_attempts", 0), **{name: counters.get(name, 0) for name in COUNTERS}
        )
    )
    cache = stats["cache"]
    lines.append(
        "cache: {hits:.0f} texts found, {misses:.0f} not (hit ratio {hit_ratio:.1%}), {answered:.0f} jobs answered "
        "without a worker; {entries:.0f} entries, {megabytes:.1f} of {budget_megabytes:.1f} MB, {trimmed:.0f} "
        "trimmed".format(megabytes=cache["bytes"] / 1e6, budget_megabytes=cache["budget"] / 1e6, **cache)
    )
    for lane, facts in stats["lanes"].items():
        lines.append(
            f"lane {lane} (rq queue {facts['rq_queue']}): {facts['queued']} queued, {facts['running']} running, "
            f"{facts['failed']} failed, {facts['counters']['jobs']:.0f} jobs done"
        )
        for name, values in facts["percentiles"].items():
            lines.append(
                f"  {name:<9} p50 {values['p50']:9.2f}   p95 {values['p95']:9.2f}   mean {values['mean']:9.2f}"
            )
    return "\n".join(lines)
