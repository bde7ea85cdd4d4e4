"""The search-like workload over HTTP: embedq's fleet-wide cache behind its gateway (one API key) against
infinity 0.0.78 with its own `vector_disk_cache` on, same model, same 2 cores, one load generator for both
(benchlib.KeepAlive). 6,000 one-text requests from 16 concurrent clients, drawn from 2,000 distinct STS-B
sentences with a Zipf law (s = 1.0, bench/cache.zipf_draws); requests/s, alternating, medians of --repeats.
Each run's sentences carry a tag of their own, so both caches start every run cold (neither can be cleared
from outside in the same way). embedq's hit ratio is read from its stats; infinity reports none.
Results go to bench/results/infinity_cache.json (then `./dev bench report`).

infinity as bench/infinity_peer.py installs and starts it, plus its cache's package and the cache switched on:
    /tmp/infvenv/bin/pip install diskcache
    cd /tmp/infmodel && INFINITY_HOME=/tmp/infhome infinity_emb v2 --model-id . --engine optimum \\
        --batch-size 32 --device cpu --vector-disk-cache --pooling-method mean --url-prefix /v1 --port 7997

    ./dev bench infinity_cache [--infinity-url http://127.0.0.1:7997/v1] [--repeats 3]"""

from __future__ import annotations

import argparse
import statistics
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from benchlib import KeepAlive, alternate, concurrent_rate, save, start_gateway
from cache import CLIENTS, KEY, MODEL, distinct_sentences, zipf_draws

from embedq import EmbedClient
from embedq.config import Settings
from embedq.local.service import LocalService
from embedq.producer.stats import cache_stats

PORT = 8768


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--infinity-url", default="http://127.0.0.1:7997/v1")
    parser.add_argument("--infinity-model", default=".")
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--distinct", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stsb", type=Path)
    args = parser.parse_args()
    sentences = distinct_sentences(args.stsb, args.distinct)
    infinity = KeepAlive(args.infinity_url)
    embedq = KeepAlive(f"http://127.0.0.1:{PORT}/v1", headers={"Authorization": f"Bearer {KEY}"})
    settings = Settings.load(queue="embedq-bench-infinity-cache", workers=2, log_level="WARNING")
    ratios: list[float] = []

    def workload(http: KeepAlive, model: str, client: EmbedClient | None = None) -> Callable[[], float]:
        def ask(text: str) -> object:
            return http.post("/embeddings", {"model": model, "input": text})

        def measure() -> float:
            tag = uuid.uuid4().hex[:8]  # this run's own sentences: both caches start cold
            draws = [f"{sentence} [{tag}]" for sentence in zipf_draws(sentences, args.calls)]
            before = cache_stats(client.connection, settings.queue) if client else None
            rate = concurrent_rate(ask, draws, CLIENTS)
            if client and before:
                after = cache_stats(client.connection, settings.queue)
                hits, misses = after["hits"] - before["hits"], after["misses"] - before["misses"]
                ratios.append(hits / max(hits + misses, 1))
            return rate

        return measure

    with LocalService(settings, log_path=Path("/tmp/embedq-bench-infinity-cache.log")) as service:
        gateway = start_gateway(service.settings, PORT, {"EMBEDQ_API_KEYS": KEY})
        try:
            client = service.client
            assert client is not None
            warm = [f"warm-up {n}" for n in range(64)]
            for http, model in ((embedq, MODEL), (infinity, args.infinity_model)):
                http.post("/embeddings", {"model": model, "input": warm})
            samples = alternate(
                {
                    "embedq": workload(embedq, MODEL, client),
                    "infinity": workload(infinity, args.infinity_model),
                },
                args.repeats,
            )
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    ours, theirs = statistics.median(samples["embedq"]), statistics.median(samples["infinity"])
    row = {
        "embedq": ours,
        "infinity": theirs,
        "ratio": ours / theirs,
        "ratios": [o / t for o, t in zip(samples["embedq"], samples["infinity"])],
        "samples": samples,
        "embedq_hit_ratio": statistics.median(ratios),
    }
    print(
        f"Zipf workload over HTTP, requests/s: embedq {ours:,.0f} (hit ratio {row['embedq_hit_ratio']:.1%}), "
        f"infinity with vector_disk_cache {theirs:,.0f}: {row['ratio']:.2f}x",
        flush=True,
    )
    save(
        "infinity_cache",
        {"peer": "infinity-emb 0.0.78, optimum engine, vector_disk_cache on", "calls": args.calls, "row": row},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
