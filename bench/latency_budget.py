"""Where one short text's time goes, from `embed()` to the vector in hand, on an idle fleet of 2 workers
(1 ONNX thread each, the default) and a private local Redis. Results go to bench/results/latency_budget.json.

    ./dev bench latency_budget [--samples 300] [--cache]

By default the cache is off (as when these budgets were set); --cache runs it on, every text new (so every
look-up misses and every pass writes its entries): the budget's gates with the cache's costs, saved to
bench/results/latency_budget_cache.json.

Each sample embeds one new text. The steps, p50 over the samples, in µs:
- the floor: the same text through an Encoder in this process with 1 thread (what the queue adds to);
- client: plan (validation, rq's job records), then the one round trip that submits and starts waiting;
- worker: enqueue → the pass starts (the doorbell wakes a worker, take_pass.lua, payload decode),
  then tokenize, infer and pool (the result's own timings), then packing the result;
- back: the pass's end → the vector in the caller's hand (finish_pass.lua, XREAD's wake, decoding);
- Redis' own time per script and command (SLOWLOG at threshold 0 on the private server), per text;
- then 16 concurrent clients (threads sharing one EmbedClient, as a web app's would) sending one text each,
  one after another: every request's latency, p50 and p99 (issue 23's gate: p99 ≤ 3× p50).
The worker's steps come from the wall clock of one machine (time.time in both processes)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from benchlib import save
from redis import Redis

from embedq.broker.scripts import load, names
from embedq.config import Settings
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService
from embedq.producer.waiting import wait_steps
from embedq.worker.model.encoder import Encoder

CLIENTS = 16


def p50_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def redis_costs(admin: Redis, samples: int) -> dict[str, float]:
    """Redis' own µs per text for each script (by name) and command, from its slow log at threshold 0."""
    by_sha = {load(name).sha: name for name in names()}
    total: dict[str, float] = defaultdict(float)
    for entry in admin.slowlog_get(100_000):
        command = entry["command"].decode(errors="replace").split()
        name = command[0].lower()
        if name in ("evalsha", "eval") and len(command) > 1:
            name = by_sha.get(command[1], "script ?")
        if name in ("slowlog", "config", "info", "ping", "client"):
            continue
        total[name] += entry["duration"]
    return {name: micros / samples for name, micros in sorted(total.items(), key=lambda item: -item[1])}


def sample(client: Any, floor: Encoder, text: str, steps: dict[str, list[float]]) -> None:
    """One text through the floor and through the queue, its steps added to `steps` (seconds)."""
    t0 = time.perf_counter()
    floor.encode([text])
    steps["floor: in-process Encoder, 1 thread"].append(time.perf_counter() - t0)
    t1 = time.perf_counter()
    plan = client._plan([[text]], {})
    t2, sent = time.perf_counter(), time.time()  # rq stamped the job's enqueue time just before
    (result,) = client._run(wait_steps(plan.job_ids, 30, submit=plan))
    t3, held = time.perf_counter(), time.time()
    timings = {name: ms / 1000 for name, ms in result.timings.items()}
    work = timings["tokenize_ms"] + timings["infer_ms"] + timings["pool_ms"]
    steps["client: plan (validate, rq's job records)"].append(t2 - t1)
    steps["enqueue -> pass starts (send, wake, take_pass, decode)"].append(timings["queue_ms"])
    steps["tokenize"].append(timings["tokenize_ms"])
    steps["infer"].append(timings["infer_ms"])
    steps["pool + normalize"].append(timings["pool_ms"])
    steps["pack result"].append(max(0.0, timings["total_ms"] - timings["queue_ms"] - work))
    steps["pass ends -> vector in hand (finish_pass, wake, decode)"].append(held - sent - timings["total_ms"])
    steps["embed() end to end"].append(t3 - t1)


def concurrent_latencies(client: Any, clients: int, requests: int, topic: str = "the weather") -> list[float]:
    """Each request's latency (s), `clients` threads each sending one new text at a time."""

    def ask(i: int) -> float:
        started = time.perf_counter()
        client.embed([f"concurrent query number {i} about {topic}"], timeout=60)
        return time.perf_counter() - started

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(ask, range(requests)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--concurrent-requests", type=int, default=1600)
    parser.add_argument("--cache", action="store_true", help="with the cache on (every text new: all misses)")
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        settings = Settings.load(queue="embedq-budget", redis_url=server.url, cache=args.cache)
        floor = Encoder.from_settings(settings.model_copy(update={"workers": 1, "intra_op_threads": 1}))
        floor.encode(["warm-up"])
        admin = Redis.from_url(server.url)
        steps: dict[str, list[float]] = defaultdict(list)
        with LocalService(settings, workers=2) as service:
            client = service.client
            assert client is not None
            for i in range(20):  # warm both workers and the client's scripts
                client.embed([f"warm-up text {i}"], timeout=30)
            for i in range(args.samples):
                sample(client, floor, f"what is the capital of country number {i}?", steps)
            # Redis' own costs in a run of their own: logging every command slows Redis down
            admin.config_set("slowlog-max-len", 1_000_000)
            admin.config_set("slowlog-log-slower-than", 0)
            admin.slowlog_reset()
            for i in range(args.samples):
                sample(client, floor, f"what is the capital of region number {i}?", defaultdict(list))
            costs = redis_costs(admin, args.samples)
            admin.config_set("slowlog-log-slower-than", 10_000)
            concurrent_latencies(client, CLIENTS, 64, "warming up")  # the pool's connections
            latencies = sorted(concurrent_latencies(client, CLIENTS, args.concurrent_requests))
    finally:
        server.cleanup()
    budget = {step: p50_us(values) for step, values in steps.items()}
    floor_us, total_us = budget["floor: in-process Encoder, 1 thread"], budget["embed() end to end"]
    for step, micros in budget.items():
        print(f"  {step:58s} {micros:9.0f} µs")
    print(f"  embed() - floor: {total_us - floor_us:.0f} µs (goal ≤ 1500)")
    p50, p99 = p50_us(latencies), float(np.percentile(latencies, 99)) * 1e6
    print(f"  {CLIENTS} concurrent clients: p50 {p50:.0f} µs, p99 {p99:.0f} µs, p99/p50 {p99 / p50:.2f} (goal ≤ 3)")
    print("  Redis' own time per text:")
    for name, micros in costs.items():
        print(f"    {name:30s} {micros:8.1f} µs")
    data: dict[str, Any] = {
        "cache": args.cache,
        "samples": args.samples,
        "workers": 2,
        "budget_us_p50": budget,
        "queue_added_us": total_us - floor_us,
        "redis_us_per_text": costs,
        "concurrent": {
            "clients": CLIENTS,
            "requests": len(latencies),
            "p50_us": p50,
            "p99_us": p99,
            "ratio": p99 / p50,
        },
    }
    save("latency_budget_cache" if args.cache else "latency_budget", data, script="latency_budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
