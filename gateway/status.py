"""What the status page shows: each served queue's depth and wait, its live workers, throughput and
latency over the last minutes (sampled from the fleet's numbers in Redis every SAMPLE_EVERY seconds),
and the batches running. Counts and timings only: no user text, key, Redis address, batch metadata,
file name or custom_id."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from redis import Redis

from embedq.broker.histograms import TIMINGS
from embedq.broker.keys import BatchKeys, metrics_key, timings_key
from embedq.broker.lanes import LANES
from embedq.gateway.metrics import oldest_waits, served_queues
from embedq.producer.stats import as_text, collect_stats, histogram, quantile, queue_shards, summed

CACHE_SHOWN = ("hits", "misses", "hit_ratio", "answered", "entries", "bytes", "budget")

SAMPLE_EVERY = 5.0
HISTORY = 120  # samples kept: 10 minutes
WORKER_FIELDS = ("host", "model", "dim", "providers", "threads", "jobs_done", "started")
BATCH_FIELDS = ("status", "total", "completed", "failed", "created_at")


class StatusBoard:
    def __init__(self, connection: Redis, cluster: bool = False) -> None:
        self.connection = connection
        self.cluster = cluster  # REDIS_CLUSTER: every queue's shards are tagged
        self.batch_keys = BatchKeys.of(cluster)
        self.samples: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    def _histograms(self, shards: list[str]) -> dict[str, list[tuple[float, float]]]:
        fields = summed(self.connection, [timings_key(shard) for shard in shards])
        merged: dict[str, list[tuple[float, float]]] = {}
        for timing in TIMINGS:
            per_lane = [histogram(fields, lane, timing)[0] for lane in LANES]
            merged[timing] = [(bound, sum(lane[i][1] for lane in per_lane)) for i, (bound, _) in enumerate(per_lane[0])]
        return merged

    def sample(self) -> None:
        """Record the fleet's cumulative texts and latency histograms now (if the last sample is old enough)."""
        now = time.time()
        if self.samples and now - self.samples[-1]["at"] < SAMPLE_EVERY:
            return
        queues = {}
        for queue in served_queues(self.connection):  # the counters only: not collect_stats' worker scan
            shards = queue_shards(self.connection, queue, self.cluster)
            counters = summed(self.connection, [metrics_key(shard) for shard in shards])
            queues[queue] = {
                "texts": sum(counters.get(f"{lane}:texts", 0.0) for lane in LANES),
                "histograms": self._histograms(shards),
            }
        self.samples.append({"at": now, "queues": queues})

    def series(self, queue: str) -> list[dict[str, float | None]]:
        """Per interval between samples: texts/s and p50 / p95 end-to-end ms of the jobs that finished in it."""
        points = []
        pairs = zip(list(self.samples)[:-1], list(self.samples)[1:])
        for before, after in pairs:
            if queue not in before["queues"] or queue not in after["queues"]:
                continue
            then, now = before["queues"][queue], after["queues"][queue]
            seconds = max(after["at"] - before["at"], 1e-9)
            window = [
                (bound, seen - earlier)
                for (bound, seen), (_, earlier) in zip(now["histograms"]["total_ms"], then["histograms"]["total_ms"])
            ]
            points.append(
                {
                    "at": after["at"],
                    "texts_per_second": (now["texts"] - then["texts"]) / seconds,
                    "p50_ms": quantile(window, 0.5),
                    "p95_ms": quantile(window, 0.95),
                }
            )
        return points

    def status(self) -> dict[str, Any]:
        self.sample()
        queues = []
        for queue in served_queues(self.connection):
            shards = queue_shards(self.connection, queue, self.cluster)
            stats = collect_stats(self.connection, queue, shards=shards)
            waited = oldest_waits(self.connection, shards)
            lanes = {
                lane: {
                    "queued": facts["queued"],
                    "running": facts["running"],
                    "failed": facts["failed"],
                    "oldest_wait_seconds": waited[lane],
                }
                for lane, facts in stats["lanes"].items()
            }
            queues.append(
                {
                    "queue": queue,
                    "lanes": lanes,
                    "workers": [{key: worker.get(key, "") for key in WORKER_FIELDS} for worker in stats["workers"]],
                    "done": {"jobs": stats["counters"]["jobs"], "texts": stats["counters"]["texts"]},
                    "cache": {name: stats["cache"][name] for name in CACHE_SHOWN},
                    "series": self.series(queue),
                }
            )
        return {"at": time.time(), "sample_every": SAMPLE_EVERY, "queues": queues, "batches": self.batches()}

    def batches(self) -> list[dict[str, Any]]:
        """The batches not yet final, oldest first: status and counts only (the page is open to all)."""
        ids = sorted(as_text(batch_id) for batch_id in self.connection.smembers(self.batch_keys.active))
        with self.connection.pipeline(transaction=False) as pipe:
            for batch_id in ids:
                pipe.hmget(self.batch_keys.batch(batch_id), BATCH_FIELDS)
            replies = pipe.execute()
        shown = [
            {
                "status": as_text(values[0]),
                **{name: int(value or 0) for name, value in zip(BATCH_FIELDS[1:], values[1:])},
            }
            for values in replies
            if values[0] is not None
        ]
        return sorted(shown, key=lambda batch: batch["created_at"])
