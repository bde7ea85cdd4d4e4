"""Priority lanes, side by side in one run: a 50,000-text `embed-file` in the bulk lane, with and
without one-text interactive requests sent one at a time beside it (a latency probe), on the same
fleet (2 workers). Reports interactive p50/p95 idle and under the bulk load, the time of one bulk
micro-batch (what an interactive job may wait behind: a pass is never preempted mid-inference), and
bulk throughput with the probe vs alone. Also: AsyncEmbedClient with 64 coroutines vs EmbedClient
from 16 threads. Results go to bench/results/lanes.json (then `./dev bench report`).

    ./dev bench lanes [--texts 50000] [--probes 300]"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import mixed_corpus, save, short_queries, side_by_side, stsb_path, summary

from embedq import AsyncEmbedClient, EmbedClient
from embedq.config import Settings
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService
from embedq.producer.embed_file import embed_file
from embedq.worker.model.encoder import Encoder


def probe(client: EmbedClient, count: int, stop: threading.Event | None = None) -> list[float]:
    """One-text interactive requests, one at a time: their latencies in ms."""
    times: list[float] = []
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        started = time.perf_counter()
        client.embed([f"what is the capital of country number {i}?"], timeout=60)
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)  # a request now and then, not a flood
    return times


def bulk_file(client: EmbedClient, source: Path, out: Path) -> float:
    """embed-file into the bulk lane: texts/s."""
    started = time.perf_counter()
    vectors = embed_file(client, source, out, progress=False)
    return len(vectors) / (time.perf_counter() - started)


def micro_batch_ms(settings: Settings, texts: list[str]) -> float:
    """The median time of one bulk micro-batch on one worker's threads (the encoder's own cut)."""
    encoder = Encoder.from_settings(settings)
    encoder.encode(["warm-up"])
    encodings = encoder.tokenizer.encode_batch(texts[:512], add_special_tokens=True)
    lengths = np.array([len(e.ids) for e in encodings])
    times = []
    for batch in encoder._micro_batches(lengths):
        feed, _ = encoder._feed([encodings[i] for i in batch])
        started = time.perf_counter()
        encoder.session.run([encoder.output], feed)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def clients_side_by_side(settings: Settings, queries: list[str], repeats: int) -> dict[str, Any]:
    """Single-text jobs: AsyncEmbedClient with 64 coroutines vs EmbedClient from 16 threads (jobs/s)."""
    sync = EmbedClient(settings=settings)

    def threads() -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda text: sync.embed([text], timeout=120), queries))
        return len(queries) / (time.perf_counter() - started)

    def coroutines() -> float:
        async def run() -> float:
            async with AsyncEmbedClient(settings=settings) as client:
                limit = asyncio.Semaphore(64)

                async def one(text: str) -> None:
                    async with limit:
                        await client.embed([text], timeout=120)

                started = time.perf_counter()
                await asyncio.gather(*(one(text) for text in queries))
                return len(queries) / (time.perf_counter() - started)

        return asyncio.run(run())

    rate_threads, rate_async = side_by_side(threads, coroutines, repeats)
    sync.close()
    return {
        "threads_16_jobs_per_s": rate_threads,
        "async_64_jobs_per_s": rate_async,
        "ratio": rate_async / rate_threads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=50_000)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stsb", type=Path)
    args = parser.parse_args()

    corpus = mixed_corpus(stsb_path(args.stsb), 4096)
    texts = [f"{corpus[i % len(corpus)]} ({i})" for i in range(args.texts)]  # every line its own text
    server = RedisServer().start()
    settings = Settings.load(workers=2, redis_url=server.url, queue="lanes", log_level="WARNING", cache=False)
    results: dict[str, Any] = {"texts": args.texts, "workers": 2}
    try:
        with tempfile.TemporaryDirectory() as work, LocalService(settings, log_path=Path(work) / "log") as service:
            client = service.client
            assert client is not None
            source = Path(work) / "corpus.txt"
            source.write_text("\n".join(texts) + "\n")
            probe(client, 30)
            idle = probe(client, args.probes)
            print(f"interactive, idle fleet: p50 {statistics.median(idle):.2f} ms", flush=True)
            alone = bulk_file(client, source, Path(work) / "alone.npy")
            print(f"bulk alone: {alone:,.0f} texts/s", flush=True)
            stop, latencies = threading.Event(), []
            prober = threading.Thread(target=lambda: latencies.extend(probe(client, 10**9, stop)))
            prober.start()
            beside = bulk_file(client, source, Path(work) / "beside.npy")
            stop.set()
            prober.join()
            print(
                f"bulk with the probe: {beside:,.0f} texts/s ({beside / alone:.2f}x); interactive under bulk: "
                f"p50 {statistics.median(latencies):.2f} ms",
                flush=True,
            )
            batch_ms = micro_batch_ms(service.settings, texts)
            results["interactive_idle"] = summary(idle)
            results["interactive_under_bulk"] = summary(latencies)
            results["bulk_micro_batch_ms"] = batch_ms
            results["interactive_p50_added_ms"] = statistics.median(latencies) - statistics.median(idle)
            results["bulk_alone_texts_per_s"] = alone
            results["bulk_with_probe_texts_per_s"] = beside
            results["bulk_ratio"] = beside / alone
            print(f"one bulk micro-batch: {batch_ms:.1f} ms", flush=True)
            clients = clients_side_by_side(service.settings, short_queries(512), args.repeats)
            results["async_vs_threads"] = clients
            print(
                f"single-text jobs: 16 threads {clients['threads_16_jobs_per_s']:,.0f}/s, "
                f"64 coroutines {clients['async_64_jobs_per_s']:,.0f}/s ({clients['ratio']:.2f}x)",
                flush=True,
            )
    finally:
        server.cleanup()
    save("lanes", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
