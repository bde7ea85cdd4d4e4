"""`embedq demo`: the whole service on one machine. Redis (a private one if none answers) →
default model → supervisor with N workers → sample jobs → similarities and timing metrics."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
import urllib.request
from contextlib import suppress
from pathlib import Path

import numpy as np

from embedq import EmbedClient
from embedq.config import Settings
from embedq.local.service import LocalService
from embedq.producer.stats import format_stats
from embedq.worker.supervisor.spawn import embedq_command, settings_env

SAMPLE_BATCHES = [
    ["A man is playing a guitar.", "Someone strums an acoustic guitar on stage.", "A chef is slicing onions."],
    ["The stock market fell sharply today.", "Shares dropped after the earnings report.", "A cat sleeps on the sofa."],
    ["How do I reverse a list in Python?", "Use reversed() or slicing with [::-1].", "The weather is sunny and warm."],
    ["Kittens are playing with a ball of wool.", "A kitten chases a toy.", "Interest rates rose by a quarter point."],
]


def run_demo(settings: Settings, workers: int = 2, serve_port: int | None = None) -> int:
    log_path = Path(tempfile.gettempdir()) / "embedq-demo.log"
    print(
        f"starting Redis (if none answers at {settings.redis_url}), the model and {workers} workers; "
        f"their logs go to {log_path} ..."
    )
    service = LocalService(settings, workers=workers, log_path=log_path)
    with service:
        assert service.client is not None
        if service.private_redis is not None:
            started = service.settings.redis_url
            print(f"no Redis answered at {settings.redis_url}; started a private redis-server at {started}")
        _submit_and_show(service.client)
        if serve_port is not None:
            _serve_until_interrupted(service.settings, serve_port)
        code = service.stop()
    print(f"supervisor stopped (exit code {code})")
    return 0 if code == 0 else 1


def _submit_and_show(client: EmbedClient) -> None:
    started = time.perf_counter()
    job_ids = client.submit_many(SAMPLE_BATCHES)
    results = [client.wait(job_id, timeout=60) for job_id in job_ids]
    elapsed = time.perf_counter() - started
    print(f"\n{len(job_ids)} jobs, {sum(len(b) for b in SAMPLE_BATCHES)} texts embedded in {elapsed * 1000:.0f} ms\n")
    for result in results:
        timings = "  ".join(f"{k}={v:.1f}" for k, v in result.timings.items())
        print(
            f"job {result.job_id[:8]}  worker {result.worker}  {result.usage['texts']} texts, "
            f"{result.usage['tokens']} tokens, dim {result.dim}\n    {timings}"
        )
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


def _serve_until_interrupted(settings: Settings, port: int) -> None:
    """`embedq serve` in front of the demo's workers until Ctrl-C (or SIGTERM)."""
    gateway = subprocess.Popen(embedq_command("serve", "--port", str(port)), env=settings_env(settings))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"{url}/health"):
            if gateway.poll() is not None or time.monotonic() > deadline:
                print(f"the gateway did not start (exit code {gateway.poll()}); see its output above")
                return
            time.sleep(0.1)
        print(
            f"\ngateway at {url}: status page {url}/, OpenAI API {url}/v1 (model all-MiniLM-L6-v2), "
            f"metrics {url}/metrics. Ctrl-C stops everything.",
            flush=True,
        )
        with suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            gateway.wait()
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False
