"""embedq against a Celery task around sentence-transformers, side by side on one redis-server:
jobs of 32 texts, single-text jobs from 16 concurrent requests, and one text's latency when idle.
Celery runs as its users run it (prefork, concurrency 2, the model loaded once per process, 1 torch
thread each); embedq runs its default service (2 workers). Installs Celery itself on first use
(bench/requirements-celery.txt). Results go to bench/results/celery_peer.json.

    ./dev bench celery_peer [--repeats 3] [--jobs 200]"""

from __future__ import annotations

import argparse
import importlib.util
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

from embedq import EmbedClient
from embedq.config import Settings
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService

BENCH = Path(__file__).resolve().parent
CONCURRENCY = 16


def ensure_celery() -> None:
    if importlib.util.find_spec("celery") is None:
        print("installing Celery for this benchmark (bench/requirements-celery.txt) ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(BENCH / "requirements-celery.txt")], check=True
        )


def embedq_runs(client: EmbedClient) -> dict[str, Callable[..., Any]]:
    return {
        "batch": lambda batches: client.embed_many(batches, timeout=300),
        "single": lambda text: client.embed([text], timeout=120),
    }


def celery_runs(task: Any) -> dict[str, Callable[..., Any]]:
    return {
        "batch": lambda batches: [r.get(timeout=300) for r in [task.delay(batch) for batch in batches]],
        "single": lambda text: task.delay([text]).get(timeout=120),
    }


def throughput_batches(run: Callable[..., Any], corpus: list[str]) -> Callable[[], float]:
    batches = [corpus[i : i + 32] for i in range(0, len(corpus), 32)]

    def measure() -> float:
        started = time.perf_counter()
        run(batches)
        return len(corpus) / (time.perf_counter() - started)

    return measure


def throughput_singles(run: Callable[..., Any], texts: list[str]) -> Callable[[], float]:
    def measure() -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(run, texts))
        return len(texts) / (time.perf_counter() - started)

    return measure


def p50_ms(run: Callable[..., Any], samples: int) -> float:
    times = []
    for i in range(samples):
        started = time.perf_counter()
        run(f"what is the capital of country number {i}?")
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=200, help="single-text jobs per measurement")
    parser.add_argument("--latency-samples", type=int, default=100)
    parser.add_argument("--stsb", type=Path)
    args = parser.parse_args()
    ensure_celery()
    server = RedisServer().start()
    env = {**os.environ, "CELERY_BROKER": server.url, "PYTHONPATH": str(BENCH)}
    celery_bin = str(Path(sys.executable).with_name("celery"))
    worker = subprocess.Popen(
        [celery_bin, "-A", "celery_app", "worker", "--pool", "prefork", "--concurrency", "2", "--loglevel", "WARNING"],
        cwd=BENCH,
        env=env,
    )
    os.environ["CELERY_BROKER"] = server.url
    sys.path.insert(0, str(BENCH))
    from celery_app import embed as celery_embed

    corpus = mixed_corpus(stsb_path(args.stsb), 512)
    sentences = [text for text in corpus if len(text) < 300][:480]
    queries = short_queries(args.jobs)
    results: dict[str, Any] = {"repeats": args.repeats, "concurrency": CONCURRENCY}
    try:
        settings = Settings.load(redis_url=server.url, queue="embedq-vs-celery", workers=2, cache=False)
        with LocalService(settings, log_path=Path("/tmp/embedq-bench-celery.log")) as service:
            assert service.client is not None
            ours, theirs = embedq_runs(service.client), celery_runs(celery_embed)
            reference = np.array(theirs["batch"]([corpus[:32]])[0], dtype=np.float32)  # also waits for Celery's workers
            mine = ours["batch"]([corpus[:32]])[0]
            results["min_cosine_embedq_vs_celery"] = float((reference * mine).sum(axis=1).min())
            rows = {}
            for key, label, make in (
                (
                    "batches",
                    "jobs of 32 texts, mixed corpus (1 in 16 long) (texts/s)",
                    lambda run: throughput_batches(run["batch"], corpus),
                ),
                (
                    "batches_short",
                    "jobs of 32 texts, STS-B sentences only (texts/s)",
                    lambda run: throughput_batches(run["batch"], sentences),
                ),
                (
                    "singles",
                    f"single-text jobs, {CONCURRENCY} concurrent requests (jobs/s)",
                    lambda run: throughput_singles(run["single"], queries),
                ),
            ):
                celery_rate, embedq_rate = side_by_side(make(theirs), make(ours), args.repeats)
                rows[key] = {
                    "measure": label,
                    "celery": celery_rate,
                    "embedq": embedq_rate,
                    "ratio": embedq_rate / celery_rate,
                }
                print(
                    f"  {label}: Celery {celery_rate:,.1f}, embedq {embedq_rate:,.1f}, "
                    f"{embedq_rate / celery_rate:.2f}x",
                    flush=True,
                )
            celery_ms, embedq_ms = (
                p50_ms(theirs["single"], args.latency_samples),
                p50_ms(ours["single"], args.latency_samples),
            )
            rows["latency"] = {
                "measure": "one text when idle, p50 (ms)",
                "celery": celery_ms,
                "embedq": embedq_ms,
                "ratio": celery_ms / embedq_ms,
            }
            print(
                f"  idle one-text p50: Celery {celery_ms:.2f} ms, embedq {embedq_ms:.2f} ms "
                f"({celery_ms / embedq_ms:.2f}x lower)",
                flush=True,
            )
            results["rows"] = rows
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        server.cleanup()
    save("celery_peer", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
