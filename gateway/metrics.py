"""GET /metrics: Prometheus text. The fleet's numbers (queue depth and age, live workers, counters,
latency histograms) are read from Redis at scrape time, where the workers keep them, so every gateway
replica reports the same; the gateway's own request counts are this process's."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis

from embedq.broker.histograms import TIMINGS
from embedq.broker.keys import QUEUES_KEY, WORKER_KEY_PATTERN, BatchKeys, metrics_key, timings_key
from embedq.broker.lanes import COUNTERS, LANES
from embedq.broker.rq_private.queues import lane_queues
from embedq.broker.rq_private.records import job_key
from embedq.gateway.batch.batches import ACTIVE, FINAL
from embedq.producer.stats import as_text, cache_stats, histogram, process_facts, queue_shards, read_numbers, summed

COUNTER_HELP = {
    "jobs": "jobs finished",
    "texts": "texts the model ran (not those answered from the cache)",
    "tokens": "tokens the model ran",
    "truncated": "texts truncated at the model's maximum length",
    "passes": "inference passes (coalesced jobs)",
}
TIMING_HELP = {"queue_ms": "queue wait", "infer_ms": "inference", "total_ms": "enqueue to result"}
CACHE_COUNTERS = {
    "hits": "texts found in the cache",
    "misses": "texts looked up and not found in the cache",
    "answered": "jobs answered from the cache without a worker",
    "writes": "entries written to the cache",
    "trimmed": "cache entries removed to keep the byte budget",
}
CACHE_GAUGES = {
    "bytes": "bytes the cache's entries count against the budget",
    "entries": "entries in the cache",
    "budget": "bytes the cache may count",
    "hit_ratio": "hits / (hits + misses) since the counters began",
}


def served_queues(connection: Redis) -> list[str]:
    """The queues any worker has claimed (no keyspace scan)."""
    return sorted(as_text(queue) for queue in connection.smembers(QUEUES_KEY))


def oldest_age_seconds(connection: Redis, rq_queue_key: str) -> float:
    """How long the job at the head of an rq queue has waited (0 when it is empty)."""
    head = connection.lindex(rq_queue_key, 0)
    if head is None:
        return 0.0
    job_id = head.decode() if isinstance(head, bytes) else head
    enqueued = connection.hget(job_key(job_id), "enqueued_at")
    if not enqueued:
        return 0.0
    stamp = datetime.fromisoformat(
        (enqueued.decode() if isinstance(enqueued, bytes) else enqueued).replace("Z", "+00:00")
    )
    return max(0.0, time.time() - stamp.timestamp())


def oldest_waits(connection: Redis, shards: list[str]) -> dict[str, float]:
    """Per lane, how long its oldest waiting job has waited in any of the queue's shards (0 when all are empty)."""
    lanes = [lane_queues(shard, connection) for shard in shards]
    return {lane: max(oldest_age_seconds(connection, parts[lane].key) for parts in lanes) for lane in LANES}


class FleetCollector(Collector):
    """Reads every served queue's numbers from Redis at each scrape."""

    def __init__(self, connection: Redis, cluster: bool = False) -> None:
        self.connection = connection
        self.cluster = cluster  # REDIS_CLUSTER: every queue's shards are tagged

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("embedq_queue_depth", "jobs waiting", labels=["queue", "lane"])
        age = GaugeMetricFamily(
            "embedq_queue_oldest_job_age_seconds",
            "how long the oldest waiting job has waited",
            labels=["queue", "lane"],
        )
        workers = GaugeMetricFamily("embedq_workers", "live workers", labels=["queue", "model", "provider"])
        counters = {
            name: CounterMetricFamily(f"embedq_{name}", COUNTER_HELP[name], labels=["queue", "lane"])
            for name in COUNTERS
        }
        failures = CounterMetricFamily("embedq_failed_attempts", "job attempts that failed", labels=["queue"])
        latency = {
            timing: HistogramMetricFamily(
                f"embedq_{timing.removesuffix('_ms')}_seconds",
                f"job {TIMING_HELP[timing]} time",
                labels=["queue", "lane"],
            )
            for timing in TIMINGS
        }
        cache: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            **{
                name: CounterMetricFamily(f"embedq_cache_{name}", text, labels=["queue"])
                for name, text in CACHE_COUNTERS.items()
            },
            **{
                name: GaugeMetricFamily(f"embedq_cache_{name}", text, labels=["queue"])
                for name, text in CACHE_GAUGES.items()
            },
        }
        for queue in served_queues(self.connection):
            shards = queue_shards(self.connection, queue, self.cluster)
            for name, value in cache_stats(self.connection, queue, shards=shards).items():
                if name in cache:
                    cache[name].add_metric([queue], value)
            numbers = summed(self.connection, [metrics_key(shard) for shard in shards])
            timings = summed(self.connection, [timings_key(shard) for shard in shards])
            lanes = [lane_queues(shard, self.connection) for shard in shards]
            waited = oldest_waits(self.connection, shards)
            for lane in LANES:  # the shards added up
                depth.add_metric([queue, lane], sum(parts[lane].count for parts in lanes))
                age.add_metric([queue, lane], waited[lane])
                for name, family in counters.items():
                    family.add_metric([queue, lane], numbers.get(f"{lane}:{name}", 0.0))
                for timing, histogram_family in latency.items():
                    cumulative, total_ms = histogram(timings, lane, timing)
                    buckets = [(("+Inf" if math.isinf(b) else f"{b / 1000:g}"), count) for b, count in cumulative]
                    histogram_family.add_metric([queue, lane], buckets, total_ms / 1000)
            failures.add_metric([queue], numbers.get("failed_attempts", 0.0))
            live: dict[tuple[str, str], int] = {}
            for facts in process_facts(self.connection, WORKER_KEY_PATTERN, queue):
                key = (facts.get("model", ""), facts.get("providers", "").split(",")[0])
                live[key] = live.get(key, 0) + 1
            for (model, provider), count in live.items():
                workers.add_metric([queue, model, provider], count)
        yield from (depth, age, workers, *counters.values(), failures, *latency.values(), *cache.values())


class BatchCollector(Collector):
    """The Batch API's numbers, fleet-wide: batches not yet final by status, batches ended by status,
    and lines done by outcome (counted once per chunk by the driver's fenced script)."""

    def __init__(self, connection: Redis, keys: BatchKeys) -> None:
        self.connection, self.keys = connection, keys

    def collect(self) -> Iterator[Metric]:
        active = GaugeMetricFamily("embedq_batches", "batches not yet in a final status", labels=["status"])
        ended = CounterMetricFamily("embedq_batches_ended", "batches that reached a final status", labels=["status"])
        lines = CounterMetricFamily("embedq_batch_lines", "batch lines done", labels=["outcome"])
        ids = list(self.connection.smembers(self.keys.active))
        with self.connection.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hget(self.keys.batch(as_text(batch_id)), "status")
            statuses = pipe.execute() if ids else []
        counts = {status: 0 for status in ACTIVE}
        for status in statuses:
            if status is not None and as_text(status) in counts:
                counts[as_text(status)] += 1
        for status, count in counts.items():
            active.add_metric([status], count)
        numbers = read_numbers(self.connection, self.keys.metrics)
        for status in FINAL:
            ended.add_metric([status], numbers.get(f"ended:{status}", 0.0))
        for outcome in ("completed", "failed"):
            lines.add_metric([outcome], numbers.get(f"lines:{outcome}", 0.0))
        yield from (active, ended, lines)


def registry(connection: Redis, cluster: bool = False) -> tuple[CollectorRegistry, Counter, Counter]:
    """The gateway's registry: the fleet's numbers, its own request counter, and the jobs it cancelled
    because their client went away before a worker started them."""
    collected = CollectorRegistry()
    collected.register(FleetCollector(connection, cluster))
    collected.register(BatchCollector(connection, BatchKeys.of(cluster)))
    requests = Counter(
        "embedq_gateway_requests", "HTTP requests this gateway answered", ["route", "status"], registry=collected
    )
    abandoned = Counter(
        "embedq_gateway_cancelled_jobs", "queued jobs cancelled because their client went away", registry=collected
    )
    return collected, requests, abandoned
