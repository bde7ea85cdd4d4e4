"""OpenAI's Batch API against the other ways to embed a corpus through embedq, side by side in one run
on one fleet (2 workers): a 50,000-text batch (one text a line, as RAG ingestion writes them) from
upload to downloaded output, vs `embedq embed-file` on the same texts (the CLI, as its users run it),
vs a client sending /v1/embeddings requests of 32 texts from 8 threads (keep-alive http.client). All
three ask base64 vectors (the SDKs' default); a float batch is reported beside. While a batch runs,
one-text interactive requests go to /v1/embeddings one at a time (the latency probe of
bench/lanes.py). Results go to bench/results/batch.json (then `./dev bench report`).

    ./dev bench batch [--texts 50000] [--repeats 3]"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import openai
from benchlib import KeepAlive, mixed_corpus, process_cpu_seconds, save, stsb_path, summary
from lanes import micro_batch_ms

from embedq.config import Settings
from embedq.local.redis_server import RedisServer, free_port
from embedq.local.service import LocalService
from embedq.worker.supervisor.spawn import embedq_command, settings_env

MODEL = "all-MiniLM-L6-v2"


def batch_file(texts: list[str], encoding: str) -> bytes:
    lines = (
        {
            "custom_id": f"t{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": text, "encoding_format": encoding},
        }
        for i, text in enumerate(texts)
    )
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def batch_output(client: openai.OpenAI, data: bytes, texts: int) -> bytes:
    """Upload → create → poll → download: the output file of a batch that completed all `texts` lines."""
    uploaded = client.files.create(file=("corpus.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
    if batch.status != "completed" or batch.request_counts.completed != texts or batch.output_file_id is None:
        raise RuntimeError(f"the batch ended {batch.status}: {batch.request_counts}")
    return client.files.content(batch.output_file_id).content


def run_batch(client: openai.OpenAI, data: bytes, texts: int) -> float:
    """Upload → create → poll → download the output: texts/s."""
    started = time.perf_counter()
    lines = batch_output(client, data, texts).count(b"\n")
    elapsed = time.perf_counter() - started
    if lines != texts:
        raise RuntimeError(f"{lines} output lines for {texts} texts")
    return texts / elapsed


def run_embed_file(settings: Settings, source: Path, out: Path, texts: int) -> float:
    """`embedq embed-file` as a user runs it: texts/s, process start to .npy written."""
    env = {**os.environ, **settings_env(settings)}
    started = time.perf_counter()
    command = embedq_command("embed-file", str(source), "--out", str(out))
    subprocess.run(command, env=env, check=True, stderr=subprocess.DEVNULL)  # (its progress bar)
    elapsed = time.perf_counter() - started
    if np.load(out).shape[0] != texts:
        raise RuntimeError("embed-file wrote the wrong number of rows")
    return texts / elapsed


def run_requests(http: KeepAlive, texts: list[str]) -> float:
    """/v1/embeddings, 32 texts a request, 8 threads: texts/s."""
    requests = [texts[start : start + 32] for start in range(0, len(texts), 32)]
    body = {"model": MODEL, "encoding_format": "base64"}
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        answered = sum(
            len(a["data"]) for a in pool.map(lambda chunk: http.post("/embeddings", {**body, "input": chunk}), requests)
        )
    if answered != len(texts):
        raise RuntimeError(f"{answered} vectors for {len(texts)} texts")
    return len(texts) / (time.perf_counter() - started)


def probe(http: KeepAlive, stop: threading.Event, count: int = 10**9) -> list[float]:
    """One-text interactive requests one at a time, a pause between: their latencies in ms."""
    times: list[float] = []
    for i in range(count):
        if stop.is_set():
            break
        started = time.perf_counter()
        http.post("/embeddings", {"model": MODEL, "input": f"what is the capital of country number {i}?"})
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    return times


def rotating(measures: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Each measure `repeats` times, taking turns, the first of each round a different one (the first
    run after a pause is not always the same one's): the samples."""
    samples: dict[str, list[float]] = {name: [] for name in measures}
    names = list(measures)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            samples[name].append(measures[name]())
    return samples


def start_gateway(settings: Settings, files_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**settings_env(settings), "EMBEDQ_FILES_DIR": str(files_dir), "EMBEDQ_HTTP_PORT": str(port)}
    gateway = subprocess.Popen(embedq_command("serve"), env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(300):
        try:
            openai.OpenAI(base_url=url, api_key="-", max_retries=0).models.list()
            return gateway, url
        except openai.APIConnectionError:
            time.sleep(0.1)
    gateway.kill()
    raise RuntimeError("embedq serve did not start")


def distinct_lines(stsb: Path | None, count: int) -> list[str]:
    """`count` lines of the mixed corpus, each its own text (a line number on every one)."""
    corpus = mixed_corpus(stsb_path(stsb), 4096)
    return [f"{corpus[i % len(corpus)]} ({i})" for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stsb", type=Path)
    args = parser.parse_args()

    texts = distinct_lines(args.stsb, args.texts)
    server = RedisServer().start()
    settings = Settings.load(workers=2, redis_url=server.url, queue="batch", log_level="WARNING", cache=False)
    results: dict[str, Any] = {"texts": args.texts, "workers": 2, "repeats": args.repeats}
    gateway = None
    try:
        with tempfile.TemporaryDirectory() as work, LocalService(settings, log_path=Path(work) / "log") as service:
            gateway, url = start_gateway(service.settings, Path(work) / "files")
            client = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=600)
            http = KeepAlive(url)
            source = Path(work) / "corpus.txt"
            source.write_text("\n".join(texts) + "\n")
            base64_file, float_file = batch_file(texts, "base64"), batch_file(texts, "float")
            run_requests(http, texts[:2048])  # warm-up: sessions, pools, the gateway's model directory
            idle_stop = threading.Event()
            idle = probe(http, idle_stop, 300)
            print(f"interactive, idle fleet: p50 {statistics.median(idle):.2f} ms", flush=True)

            latencies: dict[str, list[float]] = {"batch": [], "embed_file": []}
            gateway_cpu: dict[str, list[float]] = {"batch": [], "embed_file": []}

            def with_probe(name: str, run: Callable[[], float]) -> Callable[[], float]:
                """`run` with the latency probe beside it, and the gateway's CPU seconds over it."""

                def measure() -> float:
                    stop = threading.Event()
                    prober = threading.Thread(target=lambda: latencies[name].extend(probe(KeepAlive(url), stop)))
                    cpu = process_cpu_seconds(gateway.pid)
                    prober.start()
                    try:
                        return run()
                    finally:
                        stop.set()
                        prober.join()
                        gateway_cpu[name].append(process_cpu_seconds(gateway.pid) - cpu)

                return measure

            out = Path(work) / "out.npy"
            rates = rotating(
                {
                    "batch": with_probe("batch", lambda: run_batch(client, base64_file, len(texts))),
                    "embed_file": with_probe(
                        "embed_file", lambda: run_embed_file(service.settings, source, out, len(texts))
                    ),
                    "requests_8x32": lambda: run_requests(http, texts),
                },
                args.repeats,
            )
            for name, values in rates.items():
                print(f"{name}: {statistics.median(values):,.0f} texts/s ({', '.join(f'{v:,.0f}' for v in values)})")
            float_rate = run_batch(client, float_file, len(texts))
            print(f"batch, float vectors: {float_rate:,.0f} texts/s", flush=True)
            best_peer = max(statistics.median(rates["embed_file"]), statistics.median(rates["requests_8x32"]))
            results.update(
                {
                    "texts_per_s": {name: statistics.median(values) for name, values in rates.items()},
                    "per_repeat": rates,
                    "batch_float_texts_per_s": float_rate,
                    "ratio_vs_faster_peer": statistics.median(rates["batch"]) / best_peer,
                    "input_file_bytes": len(base64_file),
                    "interactive_idle": summary(idle),
                    "interactive_during_batch": summary(latencies["batch"]),
                    "interactive_during_embed_file": summary(latencies["embed_file"]),
                    "bulk_micro_batch_ms": micro_batch_ms(service.settings, texts),
                    # the probe's requests count in both; the batch's driving only in the first
                    "gateway_cpu_s": {name: statistics.median(values) for name, values in gateway_cpu.items()},
                }
            )
            print(f"batch vs the faster peer: {results['ratio_vs_faster_peer']:.2f}x", flush=True)
            print(f"one bulk micro-batch: {results['bulk_micro_batch_ms']:.1f} ms")
            for name, times in latencies.items():
                p50, p95 = statistics.median(times), np.percentile(times, 95)
                cpu = results["gateway_cpu_s"][name]
                print(f"during {name}: interactive p50 {p50:.2f} ms, p95 {p95:.2f} ms; gateway CPU {cpu:.1f} s")
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(30)
        server.cleanup()
    save("batch", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
