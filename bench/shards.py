"""What splitting a queue into shards (QUEUE_SHARDS) costs on one Redis, side by side in one run: the same
2-worker service with 1, 3 and 6 shards, each on a private redis-server of its own (so one service's idle
polling is not counted in another's), the cache off, every text new. Per layout: single-text jobs from 16
threads (jobs/s), jobs of 32 texts from 4 threads, one call each (texts/s), and what each costs Redis
(INFO commandstats and cpu, as bench/fleet.py counts them), alternating, medians of --repeats; and one
text's p50 on an idle fleet, the shards with no home worker included. On a Redis Cluster the same scripts
run, spread over its primaries: these per-job costs are what the Cluster's primaries share between them.
Results go to bench/results/shards.json (then `./dev bench report`).

    ./dev bench shards [--jobs 800] [--repeats 3]"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchlib import alternate, mixed_corpus, save, stsb_path
from fleet import RedisCost, median_cost, singles
from redis import Redis

from embedq import EmbedClient
from embedq.config import Settings
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService

LAYOUTS = (1, 3, 6)
BATCH_CLIENTS = 4


def new(texts: list[str]) -> list[str]:
    """The texts made new to this run (the cache is off; this keeps the runs alike anyway)."""
    tag = uuid.uuid4().hex[:8]
    return [f"{text} [{tag}]" for text in texts]


def batches_from_threads(client: EmbedClient, texts: list[str], size: int = 32) -> Callable[[], float]:
    """Jobs of `size` texts, one call each from BATCH_CLIENTS threads (so calls spread over the shards): texts/s."""

    def run() -> float:
        fresh = new(texts)
        chunks = [fresh[i : i + size] for i in range(0, len(fresh), size)]
        started = time.perf_counter()
        with ThreadPoolExecutor(BATCH_CLIENTS) as pool:
            list(pool.map(lambda chunk: client.embed(chunk, timeout=300), chunks))
        return len(texts) / (time.perf_counter() - started)

    return run


def new_singles(client: EmbedClient, count: int) -> Callable[[], float]:
    """bench/fleet.py's single-text jobs from 16 threads, on texts new to each run: jobs/s."""
    queries = [f"search query number {i} about shards" for i in range(count)]
    return lambda: singles(client, new(queries))()


def costed(
    server: RedisServer, measure: Callable[[], float], per: int, costs: list[dict[str, Any]]
) -> Callable[[], float]:
    """`measure`, with what it cost `server` per job (or text) added to `costs`."""

    def run() -> float:
        with RedisCost(Redis.from_url(server.url)) as cost:
            rate = measure()
        costs.append(cost.per_job(per))
        return rate

    return run


def idle_run(client: EmbedClient, server: RedisServer, samples: int) -> tuple[float, float]:
    """One caller's single-text calls 0.2 s apart on an idle fleet: their p50 (ms) and the Redis commands
    each costs, the idle workers' looks between them included."""
    times = []
    with RedisCost(Redis.from_url(server.url)) as cost:
        for text in new([f"an idle query number {n}" for n in range(samples)]):
            time.sleep(0.2)
            started = time.perf_counter()
            client.embed([text], cache=False)
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), cost.per_job(samples)["commands_per_job"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-samples", type=int, default=60)
    parser.add_argument("--stsb", type=Path)
    args = parser.parse_args()
    corpus = mixed_corpus(stsb_path(args.stsb), 512)
    servers = {shards: RedisServer(None, "--maxmemory-policy", "noeviction").start() for shards in LAYOUTS}
    results: dict[str, Any] = {"workers": 2, "jobs": args.jobs, "repeats": args.repeats, "layouts": {}}
    try:
        with tempfile.TemporaryDirectory() as work:
            services = {
                shards: LocalService(
                    Settings.load(
                        workers=2, queue="shards-bench", queue_shards=shards, cache=False, redis_url=server.url
                    ),
                    log_path=Path(work) / f"{shards}.log",
                )
                for shards, server in servers.items()
            }
            for service in services.values():
                service.start()
            try:
                singles_cost: dict[int, list[dict[str, Any]]] = {shards: [] for shards in LAYOUTS}
                batch_cost: dict[int, list[dict[str, Any]]] = {shards: [] for shards in LAYOUTS}
                measures: dict[str, Callable[[], float]] = {}
                for shards, service in services.items():
                    client = service.client
                    assert client is not None
                    client.embed(new(["warm-up"] * 8))
                    measures[f"singles_{shards}"] = costed(
                        servers[shards], new_singles(client, args.jobs), args.jobs, singles_cost[shards]
                    )
                    measures[f"batches_{shards}"] = costed(
                        servers[shards], batches_from_threads(client, corpus), len(corpus), batch_cost[shards]
                    )
                samples = alternate(measures, args.repeats)
                for shards, service in services.items():
                    assert service.client is not None
                    idle_p50, idle_commands = idle_run(service.client, servers[shards], args.idle_samples)
                    results["layouts"][str(shards)] = {
                        "single_text_jobs_per_s": statistics.median(samples[f"singles_{shards}"]),
                        "texts_per_s_in_jobs_of_32": statistics.median(samples[f"batches_{shards}"]),
                        "commands_per_single_text_job": statistics.median(
                            cost["commands_per_job"] for cost in singles_cost[shards]
                        ),
                        "redis_cpu_us_per_single_text_job": statistics.median(
                            cost["redis_cpu_us_per_job"] for cost in singles_cost[shards]
                        ),
                        "commands_per_text_in_jobs_of_32": statistics.median(
                            cost["commands_per_job"] for cost in batch_cost[shards]
                        ),
                        "top_commands_per_single_text_job": median_cost(singles_cost[shards])["top_commands_per_job"],
                        "idle_p50_ms": idle_p50,
                        "commands_per_idle_call": idle_commands,
                        "samples": {key: value for key, value in samples.items() if key.endswith(f"_{shards}")},
                    }
            finally:
                for service in services.values():
                    service.stop()
    finally:
        for server in servers.values():
            server.cleanup()
    one = results["layouts"]["1"]
    for shards, row in results["layouts"].items():
        row["commands_vs_one_shard"] = row["commands_per_single_text_job"] / one["commands_per_single_text_job"]
        print(
            f"{shards} shard(s): {row['single_text_jobs_per_s']:,.0f} single-text jobs/s, "
            f"{row['texts_per_s_in_jobs_of_32']:,.0f} texts/s in jobs of 32; per single-text job "
            f"{row['commands_per_single_text_job']:.1f} commands ({row['commands_vs_one_shard']:.2f}x one shard), "
            f"{row['redis_cpu_us_per_single_text_job']:.0f} us Redis CPU; idle p50 {row['idle_p50_ms']:.2f} ms, "
            f"{row['commands_per_idle_call']:.1f} commands per idle call",
            flush=True,
        )
    save("shards", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
