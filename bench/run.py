"""Side-by-side benchmark: embedq's queue against the in-process Encoder it wraps, in one run.

    ./dev bench [--repeats 3] [--texts 1024]

A and B alternate in each repeat; the table shows medians and the ratio B/A. Needs the STS
Benchmark file from ../shared (or --stsb PATH)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from config import Settings  # noqa: E402
from worker.encoder import Encoder  # noqa: E402
from worker.local_service import LocalService  # noqa: E402
from worker.quality import load_stsb  # noqa: E402

DEFAULT_STSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsbenchmark" / "sts-test.csv"
JOB_TEXTS = 32


def corpus(path: Path, count: int) -> list[str]:
    """STS-B sentences plus long concatenations (truncated at the model's 256 tokens)."""
    first, second, _ = load_stsb(path)
    sentences = list(dict.fromkeys(first + second))
    rng = np.random.default_rng(0)
    long = [" ".join(rng.choice(sentences, 12)) for _ in range(count // 16)]
    texts = sentences[: count - len(long)] + long
    rng.shuffle(texts)
    return texts


def in_process(encoder: Encoder, texts: list[str]) -> float:
    started = time.perf_counter()
    for i in range(0, len(texts), JOB_TEXTS):
        encoder.encode(texts[i : i + JOB_TEXTS])
    return len(texts) / (time.perf_counter() - started)


def through_queue(service: LocalService, texts: list[str]) -> float:
    client = service.client
    assert client is not None
    started = time.perf_counter()
    ids = client.submit_many([texts[i : i + JOB_TEXTS] for i in range(0, len(texts), JOB_TEXTS)])
    for job_id in ids:
        client.wait(job_id, timeout=300)
    return len(texts) / (time.perf_counter() - started)


def latency(service: LocalService, encoder: Encoder, samples: int) -> tuple[list[float], list[float]]:
    client = service.client
    assert client is not None
    queued, raw = [], []
    for i in range(samples):
        text = f"what is the capital of country number {i}?"
        t0 = time.perf_counter()
        encoder.encode([text])
        t1 = time.perf_counter()
        client.embed([text], timeout=30)
        t2 = time.perf_counter()
        raw.append((t1 - t0) * 1000)
        queued.append((t2 - t1) * 1000)
    return queued, raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--stsb", type=Path, default=DEFAULT_STSB)
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    settings = Settings(workers=args.workers, queue="embedq-bench")
    texts = corpus(args.stsb, args.texts)
    same_threads = Encoder.from_settings(settings.model_copy(update={"workers": 1, "intra_op_threads": cores}))
    one_thread = Encoder.from_settings(settings.model_copy(update={"workers": 1, "intra_op_threads": 1}))
    same_threads.encode(texts[:JOB_TEXTS])
    print(f"machine: {cores} cores; corpus: {len(texts)} texts; jobs of {JOB_TEXTS}; {args.repeats} repeats, medians")
    with LocalService(settings, workers=args.workers, log_path=Path("/tmp/embedq-bench.log")) as service:
        through_queue(service, texts[: JOB_TEXTS * 4])  # warm both workers
        a, b = [], []
        for _ in range(args.repeats):
            a.append(in_process(same_threads, texts))
            b.append(through_queue(service, texts))
        queued, raw = latency(service, one_thread, args.latency_samples)

    a_med, b_med = statistics.median(a), statistics.median(b)
    q50, q95 = np.percentile(queued, [50, 95])
    r50 = float(np.percentile(raw, 50))
    print()
    print(f"{'measure':<58}{'value':>14}")
    print(f"{'A  in-process Encoder, ' + str(cores) + ' intra-op threads (texts/s)':<58}{a_med:>14.1f}")
    print(f"{'B  queue: ' + str(args.workers) + ' workers x ' + str(settings.threads_per_worker()) + ' thread(s) (texts/s)':<58}{b_med:>14.1f}")
    print(f"{'B / A':<58}{b_med / a_med:>14.3f}")
    print(f"{'single short text, enqueue -> result, p50 (ms)':<58}{q50:>14.2f}")
    print(f"{'single short text, enqueue -> result, p95 (ms)':<58}{q95:>14.2f}")
    print(f"{'single short text, raw inference p50 (ms, 1 thread)':<58}{r50:>14.2f}")
    print(f"{'queue overhead at p50 (ms)':<58}{q50 - r50:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
