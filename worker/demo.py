"""`embedq demo`: the whole service on one machine. Redis (a private one if none answers) →
default model → supervisor with N workers → sample jobs → similarities and timing metrics."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np

from config import Settings
from producer import EmbedClient
from producer.stats import format_stats
from worker.redis_server import redis_or_private
from worker.supervisor import settings_env

SAMPLE_BATCHES = [
    ["A man is playing a guitar.", "Someone strums an acoustic guitar on stage.", "A chef is slicing onions."],
    ["The stock market fell sharply today.", "Shares dropped after the earnings report.", "A cat sleeps on the sofa."],
    ["How do I reverse a list in Python?", "Use reversed() or slicing with [::-1].", "The weather is sunny and warm."],
    ["Kittens are playing with a ball of wool.", "A kitten chases a toy.", "Interest rates rose by a quarter point."],
]
READY_TIMEOUT = 180.0


def run_demo(settings: Settings, workers: int = 2) -> int:
    with redis_or_private(settings.redis_url) as url:
        if url != settings.redis_url:
            print(f"no Redis answered at {settings.redis_url}; started a private redis-server at {url}")
        settings = settings.model_copy(update={"redis_url": url, "workers": workers})
        _ensure_model(settings)
        print(f"starting the supervisor with {workers} workers on queue {settings.queue!r} ...")
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "supervise", "--workers", str(workers)], env=settings_env(settings)
        )
        try:
            with EmbedClient(settings=settings) as client:
                _wait_for_workers(client, workers, supervisor)
                _submit_and_show(client)
        finally:
            supervisor.send_signal(signal.SIGTERM)
            code = supervisor.wait(timeout=settings.job_timeout + 60)
            print(f"supervisor stopped (exit code {code})")
    return 0


def _ensure_model(settings: Settings) -> None:
    from worker.export import is_prepared, prepare_default

    if not is_prepared(settings.model_dir):
        print(f"preparing the default model in {settings.model_dir} (once) ...")
        prepare_default(settings.model_dir)


def _wait_for_workers(client: EmbedClient, workers: int, supervisor: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while len(client.stats()["workers"]) < workers:
        if supervisor.poll() is not None:
            raise SystemExit(f"the supervisor exited with code {supervisor.returncode}; see its log above")
        if time.monotonic() > deadline:
            raise SystemExit(f"{workers} workers were not ready within {READY_TIMEOUT:.0f} s")
        time.sleep(0.2)


def _submit_and_show(client: EmbedClient) -> None:
    started = time.perf_counter()
    job_ids = client.submit_many(SAMPLE_BATCHES)
    results = [client.wait(job_id, timeout=60) for job_id in job_ids]
    elapsed = time.perf_counter() - started
    print(f"\n{len(job_ids)} jobs, {sum(len(b) for b in SAMPLE_BATCHES)} texts embedded in {elapsed * 1000:.0f} ms\n")
    for result in results:
        timings = "  ".join(f"{k}={v:.1f}" for k, v in result.timings.items())
        print(f"job {result.job_id[:8]}  worker {result.worker}  {result.usage['texts']} texts, "
              f"{result.usage['tokens']} tokens, dim {result.dim}\n    {timings}")
    texts = [text for batch in SAMPLE_BATCHES for text in batch]
    vectors = np.concatenate([result.embeddings for result in results])
    similarity = vectors @ vectors.T
    print("\ncosine similarity (rows and columns in the order of the texts):")
    for index, text in enumerate(texts):
        print(f"  [{index:2d}] {text}")
    print("       " + "".join(f"{j:6d}" for j in range(len(texts))))
    for i, row in enumerate(similarity):
        print(f"  [{i:2d}] " + "".join(f"{value:6.2f}" for value in row))
    print("\nmost similar other text:")
    for i, row in enumerate(similarity):
        j = int(np.argsort(row)[-2])
        print(f"  {texts[i]!r:50} → {texts[j]!r} ({row[j]:.2f})")
    print("\n" + format_stats(client.stats()))
