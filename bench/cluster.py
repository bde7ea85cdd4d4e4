"""What a Redis Cluster predicts for a fleet's ceiling, side by side in one run: the same 2-worker service
on a standalone Redis (1 shard, the default) and on a private 3-primary Cluster (no replicas: they only
copy) with 3 and 6 shards. Per layout, alternating, medians of --repeats: single-text jobs from 16 threads
and jobs of 32 texts from 4 threads (bench/shards.py's workloads, every text new, the cache off), with the
Redis commands and CPU each costs summed over the primaries (INFO commandstats / cpu per node) and each
primary's share of them; one text's p50 on an idle fleet; and the cache's hit ratio on bench/cache.py's
Zipf workload (cache on). From those: the fleet's ceiling with N primaries and the workers it takes, as a
table (the busiest primary at one core). On one 2-core machine a Cluster cannot show more throughput than
one Redis: what it can show is what each job costs and how evenly the primaries share it.
Results go to bench/results/cluster.json (then `./dev bench report`).

    ./dev bench cluster [--jobs 800] [--repeats 3] [--calls 3000]"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchlib import alternate, mixed_corpus, save, stsb_path
from cache import distinct_sentences, zipf_draws
from fleet import RedisCost
from redis import Redis
from shards import batches_from_threads, new, new_singles

from embedq import EmbedClient
from embedq.config import Settings
from embedq.local.redis_cluster import RedisCluster
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService

LAYOUTS = {"standalone": 1, "cluster_3_shards": 3, "cluster_6_shards": 6}  # layout: its queue's shards
PRIMARIES = 3
CLIENTS = 16
PROJECTED = (1, 3, 6, 12)  # primaries in the ceiling table


def node_costs(
    nodes: list[Redis], measure: Callable[[], float], per: int, costs: list[list[dict[str, Any]]]
) -> Callable[[], float]:
    """`measure`, with what it cost each node per job (or text) added to `costs` (one list per run)."""

    def run() -> float:
        with ExitStack() as stack:
            counted = [stack.enter_context(RedisCost(node)) for node in nodes]
            rate = measure()
        costs.append([cost.per_job(per) for cost in counted])
        return rate

    return run


def summed(runs: list[list[dict[str, Any]]], name: str) -> dict[str, Any]:
    """The median run's `name` summed over the nodes, and each node's share of it (in the median run)."""
    totals = [sum(node[name] for node in run) for run in runs]
    middle = sorted(range(len(runs)), key=lambda i: totals[i])[len(runs) // 2]
    return {
        "per_job": totals[middle],
        "shares": [node[name] / totals[middle] for node in runs[middle]],
        "runs": totals,
    }


def idle_p50(client: EmbedClient, samples: int) -> float:
    times = []
    for text in new([f"an idle query number {n}" for n in range(samples)]):
        time.sleep(0.2)
        started = time.perf_counter()
        client.embed([text], cache=False)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def hit_ratio(client: EmbedClient, draws: list[str]) -> float:
    """The Zipf draws from CLIENTS threads on a cold cache: the share of texts found in it."""
    before = client.stats()["cache"]
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda text: client.embed([text], timeout=120), draws))
    after = client.stats()["cache"]
    hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
    return hits / max(hits + misses, 1)


def ceilings(layouts: dict[str, Any], per_worker: float) -> list[dict[str, Any]]:
    """Jobs/s at which the busiest primary spends one core, and the workers at `per_worker` jobs/s each that
    reach it: measured for 1 (standalone) and 3 primaries, projected past them with 2 shards a primary and
    the imbalance measured with 6 shards on 3."""
    alone = layouts["standalone"]["single_text"]["redis_cpu_us"]["per_job"]
    spread = layouts["cluster_6_shards"]["single_text"]["redis_cpu_us"]
    imbalance = max(spread["shares"]) * PRIMARIES  # 1.0 when the primaries share evenly
    rows = []
    for primaries in PROJECTED:
        if primaries == 1:
            ceiling, how = 1e6 / alone, "measured (standalone)"
        else:
            ceiling = primaries * 1e6 / (spread["per_job"] * imbalance)
            how = "measured (3 primaries, 6 shards)" if primaries == PRIMARIES else "projected (2 shards a primary)"
        rows.append({"primaries": primaries, "jobs_per_s": ceiling, "workers": ceiling / per_worker, "how": how})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-samples", type=int, default=60)
    parser.add_argument("--calls", type=int, default=3000, help="Zipf calls for the cache's hit ratio")
    parser.add_argument("--stsb", type=Path)
    args = parser.parse_args()
    corpus = mixed_corpus(stsb_path(args.stsb), 512)
    draws = zipf_draws(distinct_sentences(args.stsb, 2000), args.calls)
    standalone = RedisServer(None, "--maxmemory-policy", "noeviction").start()
    clusters = {name: RedisCluster(PRIMARIES, 0) for name in LAYOUTS if name != "standalone"}
    results: dict[str, Any] = {"workers": 2, "jobs": args.jobs, "repeats": args.repeats, "layouts": {}}
    try:
        for cluster in clusters.values():
            cluster.start()
        nodes = {"standalone": [Redis.from_url(standalone.url)]}
        nodes |= {name: [cluster.admin(port) for port in cluster.primary_ports()] for name, cluster in clusters.items()}

        def settings(name: str, cache: bool) -> Settings:
            url = standalone.url if name == "standalone" else clusters[name].url
            return Settings.load(
                workers=2,
                queue="cluster-bench",
                queue_shards=LAYOUTS[name],
                cache=cache,
                redis_url=url,
                redis_cluster=name != "standalone",
            )

        with tempfile.TemporaryDirectory() as work:
            services = {
                name: LocalService(settings(name, cache=False), log_path=Path(work) / f"{name}.log") for name in LAYOUTS
            }
            for service in services.values():
                service.start()
            try:
                single: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in LAYOUTS}
                batch: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in LAYOUTS}
                measures: dict[str, Callable[[], float]] = {}
                for name, service in services.items():
                    client = service.client
                    assert client is not None
                    client.embed(new(["warm-up"] * 8))
                    measures[f"singles_{name}"] = node_costs(
                        nodes[name], new_singles(client, args.jobs), args.jobs, single[name]
                    )
                    measures[f"batches_{name}"] = node_costs(
                        nodes[name], batches_from_threads(client, corpus), len(corpus), batch[name]
                    )
                samples = alternate(measures, args.repeats)
                for name, service in services.items():
                    assert service.client is not None
                    results["layouts"][name] = {
                        "shards": LAYOUTS[name],
                        "single_text_jobs_per_s": statistics.median(samples[f"singles_{name}"]),
                        "texts_per_s_in_jobs_of_32": statistics.median(samples[f"batches_{name}"]),
                        "single_text": {
                            "commands": summed(single[name], "commands_per_job"),
                            "redis_cpu_us": summed(single[name], "redis_cpu_us_per_job"),
                        },
                        "jobs_of_32_per_text": {
                            "commands": summed(batch[name], "commands_per_job"),
                            "redis_cpu_us": summed(batch[name], "redis_cpu_us_per_job"),
                        },
                        "idle_p50_ms": idle_p50(service.client, args.idle_samples),
                    }
            finally:
                for service in services.values():
                    service.stop()
            for name in ("standalone", "cluster_3_shards"):  # the cache's hit ratio, cold, on the same draws
                with LocalService(settings(name, cache=True), log_path=Path(work) / f"{name}-cache.log") as service:
                    assert service.client is not None
                    results["layouts"][name]["zipf_hit_ratio"] = hit_ratio(service.client, draws)
    finally:
        standalone.cleanup()
        for cluster in clusters.values():
            cluster.cleanup()
    layouts = results["layouts"]
    alone = layouts["standalone"]
    for name, row in layouts.items():
        for workload in ("single_text", "jobs_of_32_per_text"):
            for cost in ("commands", "redis_cpu_us"):
                row[workload][cost]["vs_standalone"] = row[workload][cost]["per_job"] / alone[workload][cost]["per_job"]
        row["idle_p50_vs_standalone_ms"] = row["idle_p50_ms"] - alone["idle_p50_ms"]
        single_cost = row["single_text"]
        commands, cpu = single_cost["commands"], single_cost["redis_cpu_us"]
        print(
            f"{name} ({row['shards']} shard(s)): {row['single_text_jobs_per_s']:,.0f} single-text jobs/s, "
            f"{row['texts_per_s_in_jobs_of_32']:,.0f} texts/s in jobs of 32; per single-text job "
            f"{commands['per_job']:.1f} commands ({commands['vs_standalone']:.2f}x), "
            f"{cpu['per_job']:.0f} us Redis CPU ({cpu['vs_standalone']:.2f}x), "
            f"primaries' CPU shares {[round(share, 3) for share in cpu['shares']]}; "
            f"idle p50 {row['idle_p50_ms']:.2f} ms ({row['idle_p50_vs_standalone_ms']:+.2f} ms)",
            flush=True,
        )
    per_worker = alone["single_text_jobs_per_s"] / results["workers"]
    results["per_worker_single_text_jobs_per_s"] = per_worker
    results["ceilings"] = ceilings(layouts, per_worker)
    for row in results["ceilings"]:
        jobs, workers = row["jobs_per_s"], row["workers"]
        print(f"{row['primaries']} primaries: {jobs:,.0f} single-text jobs/s, {workers:,.0f} workers ({row['how']})")
    ratios = {name: layouts[name]["zipf_hit_ratio"] for name in ("standalone", "cluster_3_shards")}
    alone_ratio, cluster_ratio = ratios["standalone"], ratios["cluster_3_shards"]
    print(f"cache hit ratio on the Zipf draws: standalone {alone_ratio:.1%}, cluster {cluster_ratio:.1%}")
    save("cluster", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
