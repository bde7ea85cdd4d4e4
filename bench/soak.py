"""A soak: the service under mixed load for --minutes (20) while production's faults come and go. Two
queues (A: 2 workers, B: 1 worker, each under its own supervisor) on one redis-server with AOF; producers
send single-text jobs and jobs of 64 texts to both; a worker of A is SIGKILLed every 2 minutes, one is
SIGSTOPped once (the supervisor's watchdog must kill it), Redis is restarted once (SHUTDOWN, AOF).
Every job is waited for: lost = jobs whose submit returned that never gave a result; doubled = jobs
with more than one success entry in their result stream. Sampled every 30 s: worker B's RSS (never
killed), Redis' clients and memory, the processes' threads and open files, and the keys without a TTL
by pattern (RESULT_TTL is 60 s here, so only capped keys may stay). Results: bench/results/soak.json.

    ./dev bench soak [--minutes 20]"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import save, short_queries
from redis import Redis
from redis.exceptions import RedisError

from embedq import EmbedClient, EmbedqError
from embedq.broker.rq_private.records import SUCCESSFUL, result_stream_key
from embedq.config import Settings
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService

SAMPLE_EVERY = 30.0
KILL_EVERY = 120.0


def proc(pid: int, what: str) -> int:
    """Threads, open files or RSS (kB) of a process, from /proc."""
    if what == "fds":
        return len(os.listdir(f"/proc/{pid}/fd"))
    field = {"threads": "Threads:", "rss_kb": "VmRSS:"}[what]
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def wait_until_loaded(connection: Redis) -> None:
    """Until Redis has read its AOF back and answers."""
    while True:
        try:
            connection.ping()
            return
        except RedisError:
            time.sleep(0.1)


def keys_without_ttl(connection: Redis) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for key in connection.scan_iter(count=1000):
        if connection.ttl(key) == -1:
            counts[re.sub(r"[0-9a-f]{32}|\d+\.\d+|vm\.\d+", "*", key.decode(errors="replace"))] += 1
    return dict(counts)


class Load:
    """Producers on one queue (about 20 jobs/s: single texts, and 1 in 20 of 64 texts), every job waited for
    as soon as it is acknowledged (results live RESULT_TTL = 60 s) and checked."""

    def __init__(self, settings: Settings) -> None:
        self.client = EmbedClient(settings=settings)
        self.outcomes: list[Future[str]] = []
        self.refused = 0
        self.stop = threading.Event()
        self.checkers = ThreadPoolExecutor(32)
        self.threads = [threading.Thread(target=self.produce, args=(seed,)) for seed in range(2)]

    def produce(self, seed: int) -> None:
        rng, texts = random.Random(seed), short_queries(1000)
        while not self.stop.is_set():
            batch = rng.sample(texts, 64) if rng.random() < 0.05 else [rng.choice(texts)]
            try:
                job_id = self.client.submit(batch)
            except EmbedqError:  # Redis restarting: not acknowledged, not counted
                self.refused += 1
                time.sleep(0.5)
                continue
            self.outcomes.append(self.checkers.submit(self.outcome, job_id, len(batch)))
            time.sleep(rng.uniform(0.05, 0.15))

    def outcome(self, job_id: str, count: int) -> str:
        try:
            result = self.client.wait(job_id, timeout=300)
        except EmbedqError as error:
            return type(error).__name__
        entries = self.client.connection.xrange(result_stream_key(job_id))
        successes = sum(1 for _, fields in entries if fields.get(b"type") == SUCCESSFUL)
        return "doubled" if successes > 1 else "ok" if len(result.embeddings) == count else "wrong"

    def check(self) -> dict[str, int]:
        return dict(Counter(future.result() for future in self.outcomes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0)
    args = parser.parse_args()
    server = RedisServer(None, "--appendonly", "yes", "--appendfsync", "everysec").start()
    admin = Redis.from_url(server.url)
    common = {"redis_url": server.url, "result_ttl": 60, "retries": 3, "heartbeat_timeout": 20, "cache": False}
    a = Settings.load(queue="soak-a", workers=2, **common)
    b = Settings.load(queue="soak-b", workers=1, **common)
    samples: list[dict[str, Any]] = []
    events: list[str] = []
    with (
        LocalService(a, log_path=Path("/tmp/embedq-soak-a.log")) as service_a,
        LocalService(b, log_path=Path("/tmp/embedq-soak-b.log")) as service_b,
    ):
        loads = [Load(service_a.settings), Load(service_b.settings)]
        for load in loads:
            for thread in load.threads:
                thread.start()
        watched = int(service_b.live_workers()[0]["pid"])  # never killed: its RSS must stay flat
        supervisors = [service_a.supervisor.pid, service_b.supervisor.pid]  # type: ignore[union-attr]
        started = time.monotonic()
        next_kill, next_sample, stopped_once, restarted_once = KILL_EVERY, 0.0, False, False
        while (elapsed := time.monotonic() - started) < args.minutes * 60:
            if elapsed >= next_kill:
                victim = int(random.choice(service_a.live_workers())["pid"])
                os.kill(victim, signal.SIGKILL)
                events.append(f"{elapsed:.0f} s: SIGKILL worker {victim} (queue A)")
                next_kill += KILL_EVERY
            if not stopped_once and elapsed >= args.minutes * 60 * 0.35:
                victim = int(service_a.live_workers()[0]["pid"])
                os.kill(victim, signal.SIGSTOP)
                events.append(f"{elapsed:.0f} s: SIGSTOP worker {victim} (queue A)")
                stopped_once = True
            if not restarted_once and elapsed >= args.minutes * 60 * 0.6:
                admin.shutdown()
                assert server.process is not None
                server.process.wait(timeout=60)
                server.start()
                wait_until_loaded(admin)
                events.append(f"{elapsed:.0f} s: Redis SHUTDOWN and started again (AOF)")
                restarted_once = True
            if elapsed >= next_sample:
                try:
                    pids = [*supervisors, *(int(w["pid"]) for s in (service_a, service_b) for w in s.live_workers())]
                    info = admin.info()
                    samples.append(
                        {
                            "minute": round(elapsed / 60, 2),
                            "watched_rss_mb": proc(watched, "rss_kb") / 1024,
                            "redis_clients": info["connected_clients"],
                            "redis_used_mb": info["used_memory"] / 2**20,
                            "threads": sum(proc(pid, "threads") for pid in pids),
                            "fds": sum(proc(pid, "fds") for pid in pids),
                            "processes": len(pids),
                            "keys_without_ttl": keys_without_ttl(admin),
                        }
                    )
                    print(f"  {samples[-1]}", flush=True)
                except (EmbedqError, RedisError, OSError, StopIteration) as error:  # a process mid-restart: skip
                    print(f"  sample skipped: {type(error).__name__}", flush=True)
                next_sample += SAMPLE_EVERY
            time.sleep(1)
        for load in loads:
            load.stop.set()
            for thread in load.threads:
                thread.join()
        outcomes = [load.check() for load in loads]
        refused = sum(load.refused for load in loads)
        logs = service_a.output() + service_b.output()
    server.cleanup()
    steady = [sample for sample in samples if sample["minute"] >= min(2.0, args.minutes / 2)]
    totals: Counter[str] = Counter()
    for outcome in outcomes:
        totals.update(outcome)
    results = {
        "minutes": args.minutes,
        "events": events,
        "jobs": sum(totals.values()),
        "outcomes": dict(totals),
        "refused_submits": refused,
        "hung_worker_killed": "is hung:" in logs,
        "watched_rss_growth": steady[-1]["watched_rss_mb"] / steady[0]["watched_rss_mb"],
        "samples": samples,
    }
    print({key: value for key, value in results.items() if key != "samples"})
    save("soak", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
