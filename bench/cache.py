"""The fleet-wide cache, side by side in one run (2 workers, a private Redis, the default model):

1. One short text, cached vs never seen: p50 / p95 through the Python client and through the gateway
   (idle fleet, one call at a time; "never seen" is a new text each call).
2. A search-like workload: 6,000 one-text `embed` calls from 16 threads, drawn from 2,000 distinct STS-B
   sentences with a Zipf law (s = 1.0): calls/s with the cache on (cleared before each run, so each
   starts cold) vs `cache=False`, alternating; and the hit ratio it reaches. The same through the
   gateway (one API key, http.client keep-alive connections: benchlib.KeepAlive).
3. Traffic that never repeats (every text new): 16 threads of one-text calls, cache on vs off, with the
   Redis commands and CPU each job costs (INFO commandstats and cpu, as bench/fleet.py counts them), and
   the idle p50 of one new text, on vs off: what the look-ups and writes cost when nothing repeats.
Every other benchmark runs with the cache off (its peers compute every text; so does embedq there).
Results go to bench/results/cache.json (then `./dev bench report`).

    ./dev bench cache [--calls 6000] [--distinct 2000] [--repeats 3]"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import KeepAlive, alternate, concurrent_rate, save, start_gateway, stsb_path, summary
from fleet import RedisCost

from embedq import EmbedClient
from embedq.config import Settings
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService
from embedq.producer.cache_admin import clear_cache
from embedq.producer.stats import cache_stats
from embedq.worker.model.quality import load_stsb

MODEL = "all-MiniLM-L6-v2"
PORT = 8767
KEY = "sk-bench-cache"
CLIENTS = 16


def distinct_sentences(stsb: Path | None, count: int) -> list[str]:
    """The first `count` distinct sentences of the STS-B test set: the Zipf workload's vocabulary."""
    first, second, _ = load_stsb(stsb_path(stsb))
    return list(dict.fromkeys(first + second))[:count]


def zipf_draws(sentences: list[str], calls: int, s: float = 1.0, seed: int = 0) -> list[str]:
    """`calls` sentences drawn with probability proportional to 1 / rank**s."""
    weights = 1.0 / np.arange(1, len(sentences) + 1) ** s
    rng = np.random.default_rng(seed)
    return [sentences[i] for i in rng.choice(len(sentences), calls, p=weights / weights.sum())]


def new_texts(count: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"a query never seen before {tag} {n} about search" for n in range(count)]


def interleaved(asks: dict[str, Callable[[], float]], samples: int) -> dict[str, list[float]]:
    """Each ask `samples` times, taking turns one call each (drift hits all alike): ms per call."""
    found: dict[str, list[float]] = {name: [] for name in asks}
    for _ in range(samples):
        for name, ask in asks.items():
            found[name].append(ask())
            time.sleep(0.01)
    return found


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def body(text: str) -> dict[str, Any]:
    """One text as the official SDKs ask: base64."""
    return {"model": MODEL, "input": text, "encoding_format": "base64"}


def one_text_latency(client: EmbedClient, http: KeepAlive, samples: int) -> dict[str, Any]:
    cached_text = "a popular query everyone asks"
    client.embed([cached_text])
    fresh = iter(new_texts(4 * samples))

    http.post("/v1/embeddings", body(cached_text))  # the key's own scope: fill it there too
    found = interleaved(
        {
            "client_cached": lambda: timed(lambda: client.embed([cached_text])),
            "client_new": lambda: timed(lambda: client.embed([next(fresh)])),
            "http_cached": lambda: timed(lambda: http.post("/v1/embeddings", body(cached_text))),
            "http_new": lambda: timed(lambda: http.post("/v1/embeddings", body(next(fresh)))),
        },
        samples,
    )
    shown: dict[str, Any] = {name: summary(times) for name, times in found.items()}
    for way in ("client", "http"):
        shown[f"{way}_new_over_cached_p50"] = shown[f"{way}_new"]["p50_ms"] / shown[f"{way}_cached"]["p50_ms"]
    return shown


def zipf_rates(client: EmbedClient, http: KeepAlive, draws: list[str], repeats: int) -> dict[str, Any]:
    connection, queue = client.connection, client.settings.queue
    ratios: list[float] = []

    def cold_then(run: Callable[[], float]) -> Callable[[], float]:
        def measure() -> float:
            clear_cache(connection, queue)
            before = cache_stats(connection, queue)
            rate = run()
            after = cache_stats(connection, queue)
            looked = (after["hits"] - before["hits"]) + (after["misses"] - before["misses"])
            ratios.append((after["hits"] - before["hits"]) / max(looked, 1))
            return rate

        return measure

    def http_ask(headers: dict[str, str]) -> Callable[[str], object]:
        return lambda text: http.post("/v1/embeddings", body(text), headers)

    samples = alternate(
        {
            "client_on": cold_then(lambda: concurrent_rate(lambda text: client.embed([text]), draws, CLIENTS)),
            "client_off": lambda: concurrent_rate(lambda text: client.embed([text], cache=False), draws, CLIENTS),
            "http_on": cold_then(lambda: concurrent_rate(http_ask({}), draws, CLIENTS)),
            "http_off": lambda: concurrent_rate(http_ask({"Cache-Control": "no-cache, no-store"}), draws, CLIENTS),
        },
        repeats,
    )
    rates = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "calls_per_s": rates,
        "samples": samples,
        "hit_ratio": statistics.median(ratios),
        "client_on_over_off": rates["client_on"] / rates["client_off"],
        "http_on_over_off": rates["http_on"] / rates["http_off"],
    }


def never_repeating(client: EmbedClient, repeats: int, calls: int, samples: int) -> dict[str, Any]:
    """All misses: what the look-ups cost (throughput, Redis per job and idle p50, cache on vs off)."""
    costs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}

    def run(cache: bool) -> Callable[[], float]:
        def measure() -> float:
            with RedisCost(client.connection) as cost:
                rate = concurrent_rate(lambda text: client.embed([text], cache=cache), new_texts(calls), CLIENTS)
            costs["on" if cache else "off"].append(cost.per_job(calls))
            return rate

        return measure

    rates = alternate({"on": run(True), "off": run(False)}, repeats)
    fresh = iter(new_texts(2 * samples))
    idle = interleaved(
        {
            "on": lambda: timed(lambda: client.embed([next(fresh)])),
            "off": lambda: timed(lambda: client.embed([next(fresh)], cache=False)),
        },
        samples,
    )
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    per_job = {
        way: {
            "commands": statistics.median(cost["commands_per_job"] for cost in found),
            "cpu_us": statistics.median(cost["redis_cpu_us_per_job"] for cost in found),
        }
        for way, found in costs.items()
    }
    return {
        "calls_per_s": {"on": on, "off": off},
        "redis_per_job": per_job,
        "throughput_cost": 1 - on / off,
        "idle": {name: summary(times) for name, times in idle.items()},
        "idle_p50_added_ms": statistics.median(idle["on"]) - statistics.median(idle["off"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--distinct", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--stsb", type=Path)
    args = parser.parse_args()

    sentences = distinct_sentences(args.stsb, args.distinct)
    draws = zipf_draws(sentences, args.calls)
    server = RedisServer(None, "--maxmemory-policy", "noeviction").start()
    settings = Settings.load(workers=2, redis_url=server.url, queue="cache-bench", log_level="WARNING")
    results: dict[str, Any] = {"workers": 2, "calls": args.calls, "distinct": len(sentences), "zipf_s": 1.0}
    gateway = None
    try:
        with tempfile.TemporaryDirectory() as work, LocalService(settings, log_path=Path(work) / "log") as service:
            client = service.client
            assert client is not None
            gateway = start_gateway(settings, PORT, {"EMBEDQ_API_KEYS": KEY})
            http = KeepAlive(f"http://127.0.0.1:{PORT}", headers={"Authorization": f"Bearer {KEY}"})
            client.embed(new_texts(64))  # warm
            latency = one_text_latency(client, http, args.samples)
            results["one_text"] = latency
            print(
                "one text, p50 cached / never seen: client {:.2f} / {:.2f} ms ({:.1f}x), gateway {:.2f} / {:.2f} ms "
                "({:.1f}x)".format(
                    latency["client_cached"]["p50_ms"],
                    latency["client_new"]["p50_ms"],
                    latency["client_new_over_cached_p50"],
                    latency["http_cached"]["p50_ms"],
                    latency["http_new"]["p50_ms"],
                    latency["http_new_over_cached_p50"],
                ),
                flush=True,
            )
            zipf = zipf_rates(client, http, draws, args.repeats)
            results["zipf"] = zipf
            rates = zipf["calls_per_s"]
            print(
                f"Zipf workload ({len(set(draws))} distinct of {len(draws)} calls, hit ratio {zipf['hit_ratio']:.1%}): "
                f"client {rates['client_on']:,.0f} vs {rates['client_off']:,.0f} calls/s "
                f"({zipf['client_on_over_off']:.2f}x), gateway {rates['http_on']:,.0f} vs {rates['http_off']:,.0f} "
                f"({zipf['http_on_over_off']:.2f}x)",
                flush=True,
            )
            misses = never_repeating(client, args.repeats, 1600, args.samples)
            results["never_repeating"] = misses
            print(
                f"never repeating: {misses['calls_per_s']['on']:,.0f} vs {misses['calls_per_s']['off']:,.0f} calls/s "
                f"(cost {misses['throughput_cost']:.1%}), idle p50 +{misses['idle_p50_added_ms']:.3f} ms; per job "
                f"{misses['redis_per_job']['on']['commands']:.1f} vs {misses['redis_per_job']['off']['commands']:.1f} "
                f"commands, {misses['redis_per_job']['on']['cpu_us']:.0f} vs "
                f"{misses['redis_per_job']['off']['cpu_us']:.0f} us CPU",
                flush=True,
            )
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(timeout=30)
        server.cleanup()
    save("cache", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
