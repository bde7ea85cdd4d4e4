"""Redis as a fleet sees it, side by side in one run: the same service with Redis local and with
Redis about 1 ms away (bench/redis_proxy.py delays each direction), and what each job costs Redis
(the sum of INFO commandstats calls, and INFO cpu) against plain rq running a no-op job on the same
redis-server. Results go to bench/results/fleet.json (then `./dev bench report`).

    ./dev bench fleet [--rtt-ms 1.0] [--jobs 400] [--repeats 3] [--cache]

By default the cache is off (its peers compute every text); --cache turns it on with every text new in each
measurement (all misses: what the look-ups and writes add), saved to bench/results/fleet_cache.json."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import mixed_corpus, save, short_queries, side_by_side, stsb_path
from redis import Redis
from redis_proxy import DelayProxy
from rq import Queue

from embedq import EmbedClient
from embedq.config import Settings
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService

CONCURRENCY = 16
BENCH = Path(__file__).resolve().parent


def singles(client: EmbedClient, texts: list[str]) -> Callable[[], float]:
    """Single-text jobs from CONCURRENCY web requests at once: jobs/s."""

    def run() -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(lambda text: client.embed([text], timeout=120), texts))
        return len(texts) / (time.perf_counter() - started)

    return run


def batches(client: EmbedClient, texts: list[str], size: int = 32) -> Callable[[], float]:
    """Jobs of `size` texts, one submit_many and one wait_many: texts/s."""

    def run() -> float:
        started = time.perf_counter()
        client.wait_many(client.submit_many([texts[i : i + size] for i in range(0, len(texts), size)]), timeout=300)
        return len(texts) / (time.perf_counter() - started)

    return run


def latency(client: EmbedClient, samples: int) -> list[float]:
    times = []
    for i in range(samples):
        started = time.perf_counter()
        client.embed([f"what is the capital of country number {i}?"], timeout=30)
        times.append((time.perf_counter() - started) * 1000)
    return times


class RedisCost:
    """Commands (INFO commandstats: a script's own commands count, one each) and CPU Redis spends."""

    def __init__(self, connection: Redis):
        self.connection = connection

    def __enter__(self) -> RedisCost:
        self.connection.config_resetstat()
        self.cpu = self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu_s = self._cpu() - self.cpu
        stats = self.connection.info("commandstats")
        self.commands = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}

    def _cpu(self) -> float:
        info = self.connection.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    def per_job(self, jobs: int) -> dict[str, Any]:
        top = sorted(self.commands.items(), key=lambda item: -item[1])[:12]
        return {
            "jobs": jobs,
            "commands_per_job": sum(self.commands.values()) / jobs,
            "redis_cpu_us_per_job": self.cpu_s / jobs * 1e6,
            "top_commands_per_job": {name: calls / jobs for name, calls in top},
        }


def median_cost(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median Redis CPU per job, with every run's CPU and commands beside it."""
    middle = sorted(runs, key=lambda run: run["redis_cpu_us_per_job"])[len(runs) // 2]
    return {
        **middle,
        "redis_cpu_us_per_job_runs": [run["redis_cpu_us_per_job"] for run in runs],
        "commands_per_job_runs": [run["commands_per_job"] for run in runs],
    }


def plain_rq_noop(url: str, connection: Redis, jobs: int) -> dict[str, Any]:
    """rq as its users run it (default serializer and worker), a job that does nothing."""
    queue = Queue("plain-rq-noop", connection=connection)
    with RedisCost(connection) as cost:
        for _ in range(jobs):
            queue.enqueue("noop_job.noop")
        rq = Path(sys.executable).with_name("rq")
        env = {**os.environ, "PYTHONPATH": str(BENCH)}
        subprocess.run(
            [str(rq), "worker", "--burst", "--url", url, "--logging_level", "WARNING", queue.name],
            check=True,
            env=env,
            cwd=BENCH,
            timeout=600,
        )
    return cost.per_job(jobs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt-ms", type=float, default=1.0, help="round trip the proxy adds")
    parser.add_argument("--jobs", type=int, default=400, help="single-text jobs per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--stsb", type=Path)
    parser.add_argument("--cache", action="store_true", help="with the cache on, every text new (all misses)")
    args = parser.parse_args()

    server = RedisServer().start()
    proxy = DelayProxy(server.port, args.rtt_ms / 2000).start()
    direct = Redis.from_url(server.url)
    base = Settings.load(workers=2, cache=args.cache)
    log = Path("/tmp/embedq-bench-fleet")
    queries = short_queries(args.jobs)
    corpus = mixed_corpus(stsb_path(args.stsb), 512)
    results: dict[str, Any] = {"rtt_ms": args.rtt_ms, "concurrency": CONCURRENCY, "repeats": args.repeats}
    try:
        local_settings = base.model_copy(update={"redis_url": server.url, "queue": "fleet-local"})
        remote_settings = base.model_copy(
            update={"redis_url": f"redis://127.0.0.1:{proxy.port}/0", "queue": "fleet-remote"}
        )
        with (
            LocalService(local_settings, log_path=log.with_suffix(".local.log")) as local,
            LocalService(remote_settings, log_path=log.with_suffix(".remote.log")) as remote,
        ):
            near, far = local.client, remote.client
            assert near is not None and far is not None
            for client in (near, far):
                singles(client, queries[:64])()
            if not args.cache:  # the cache on answers repeated texts: only the costs below mean anything
                print(f"1. Redis local (A) vs ~{args.rtt_ms:g} ms away (B), the same service", flush=True)
                rows = {}
                for key, label, a, b in (
                    (
                        "singles",
                        f"single-text jobs, {CONCURRENCY} concurrent requests (jobs/s)",
                        singles(near, queries),
                        singles(far, queries),
                    ),
                    (
                        "batches",
                        "jobs of 32 texts, one submit_many + wait_many (texts/s)",
                        batches(near, corpus),
                        batches(far, corpus),
                    ),
                ):
                    rate_a, rate_b = side_by_side(a, b, args.repeats)
                    rows[key] = {"measure": label, "local": rate_a, "remote": rate_b, "ratio": rate_b / rate_a}
                    shown = f"local {rate_a:,.1f}, remote {rate_b:,.1f}, ratio {rate_b / rate_a:.2f}"
                    print(f"   {label}: {shown}", flush=True)
                near_ms, far_ms = latency(near, args.latency_samples), latency(far, args.latency_samples)
                p50_near, p50_far = statistics.median(near_ms), statistics.median(far_ms)
                rows["latency"] = {
                    "local_p50_ms": p50_near,
                    "local_p95_ms": float(np.percentile(near_ms, 95)),
                    "remote_p50_ms": p50_far,
                    "remote_p95_ms": float(np.percentile(far_ms, 95)),
                    "added_rtts_p50": (p50_far - p50_near) / args.rtt_ms,
                }
                print(
                    f"   one text p50: local {p50_near:.2f} ms, remote {p50_far:.2f} ms "
                    f"(+{rows['latency']['added_rtts_p50']:.1f} RTT)",
                    flush=True,
                )
                results["remote_vs_local"] = rows

            print(f"2. what a job costs Redis ({args.jobs} jobs each, alternating, medians)", flush=True)
            chunks = [corpus[i : i + 32] for i in range(0, len(corpus), 32)]
            singles_cost, batch_cost, plain_cost = [], [], []
            for run in range(args.repeats):
                tag = f" (run {run})" if args.cache else ""  # with the cache on: texts it has none of
                with RedisCost(direct) as cost:
                    singles(near, [query + tag for query in queries])()
                singles_cost.append(cost.per_job(len(queries)))
                with RedisCost(direct) as cost:
                    near.wait_many(near.submit_many([[text + tag for text in chunk] for chunk in chunks]), timeout=300)
                batch_cost.append(cost.per_job(len(corpus)))
                plain_cost.append(plain_rq_noop(server.url, direct, args.jobs))
            results["embedq_single_text_job"] = median_cost(singles_cost)
            results["embedq_per_text_in_jobs_of_32"] = median_cost(batch_cost)
            results["plain_rq_noop_job"] = median_cost(plain_cost)
        ours, plain = results["embedq_single_text_job"], results["plain_rq_noop_job"]
        results["single_text_job_vs_plain_rq"] = {
            "commands": ours["commands_per_job"] / plain["commands_per_job"],
            "redis_cpu": ours["redis_cpu_us_per_job"] / plain["redis_cpu_us_per_job"],
        }
        for name in ("embedq_single_text_job", "embedq_per_text_in_jobs_of_32", "plain_rq_noop_job"):
            entry = results[name]
            top = ", ".join(f"{k} {v:.1f}" for k, v in list(entry["top_commands_per_job"].items())[:6])
            commands, cpu = entry["commands_per_job"], entry["redis_cpu_us_per_job"]
            print(f"   {name}: {commands:.1f} commands, {cpu:.0f} µs Redis CPU; top: {top}")
    finally:
        proxy.stop()
        server.cleanup()
    save("fleet_cache" if args.cache else "fleet", results, script="fleet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
