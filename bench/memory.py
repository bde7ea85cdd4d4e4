"""Worker memory under many jobs of varied shapes, measured two ways in one run.

    ./dev bench memory [--jobs 10000] [--calls 3000]

1. ONNX Runtime session settings side by side: each in a fresh process, the same random
   batch shapes (1-8 texts x 3-256 tokens), RSS after 100 calls and after --calls.
2. Real worker processes under the supervisor: RSS of each worker after the first 100 jobs and
   after --jobs jobs of mixed lengths, with the settings embedq ships.
Results go to bench/results/memory.json (then `./dev bench report`)."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import save

from embedq.config import Settings
from embedq.local.service import LocalService

SESSION_CONFIGS = {
    "ORT defaults (arena + memory pattern)": {},
    "no memory pattern (embedq)": {"enable_mem_pattern": False},
    "no arena": {"enable_cpu_mem_arena": False},
    "no arena, no memory pattern": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False},
    "defaults + lengths bucketed to 16": {"bucket": 16},
}

PROBE = r"""
import json, sys, numpy as np, onnxruntime as ort
config, calls, model = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
bucket = config.pop("bucket", 1)
options = ort.SessionOptions()
options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
options.intra_op_num_threads = 1
for name, value in config.items():
    setattr(options, name, value)
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
rng = np.random.default_rng(0)
marks = {}
for call in range(1, calls + 1):
    rows, width = int(rng.integers(1, 9)), int(rng.integers(3, 257))
    width = min(256, -(-width // bucket) * bucket)
    ids = rng.integers(1000, 29000, size=(rows, width))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    session.run(["last_hidden_state"], feed)
    if call in (100, calls):
        marks[call] = rss_mb()
print(json.dumps(marks))
"""


def compare_sessions(model: Path, calls: int) -> list[dict[str, Any]]:
    print(
        f"1. ONNX Runtime settings, {calls} calls of random shapes (1-8 x 3-256 tokens), 1 thread, fresh process each"
    )
    print(f"   {'settings':<40}{'RSS@100 MB':>12}{'RSS@' + str(calls) + ' MB':>14}{'growth':>9}{'seconds':>9}")
    rows = []
    for label, config in SESSION_CONFIGS.items():
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", PROBE, json.dumps(config), str(calls), str(model)],
            capture_output=True,
            text=True,
            check=True,
        )
        marks = json.loads(out.stdout)
        first, last = marks["100"], marks[str(calls)]
        print(f"   {label:<40}{first:>12.0f}{last:>14.0f}{last / first:>8.2f}x{time.perf_counter() - started:>9.0f}")
        rows.append({"settings": label, "calls": calls, "rss_after_100_mb": first, "rss_after_all_mb": last})
    return rows


def rss_mb(pid: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def mixed_jobs(count: int) -> list[list[str]]:
    rng = random.Random(0)
    words = ["embedding", "queue", "worker", "vector", "token", "model", "redis", "batch", "latency", "memory", "shape"]
    return [
        [" ".join(rng.choices(words, k=rng.randint(1, 250))) for _ in range(rng.randint(1, 4))] for _ in range(count)
    ]


def worker_memory(settings: Settings, jobs: int, workers: int) -> list[dict[str, Any]]:
    print(f"\n2. {workers} real worker processes, {jobs} jobs of 1-4 texts x 1-250 words (mixed shapes)")
    batches = mixed_jobs(jobs)
    with LocalService(settings, workers=workers, log_path=Path("/tmp/embedq-bench-memory.log")) as service:
        client = service.client
        assert client is not None
        pids = [w["pid"] for w in service.live_workers()]
        started = time.perf_counter()
        for job_id in client.submit_many(batches[:100]):
            client.wait(job_id, timeout=120)
        after_100 = {pid: rss_mb(pid) for pid in pids}
        done = 100
        for start in range(100, jobs, 500):
            for job_id in client.submit_many(batches[start : start + 500]):
                client.wait(job_id, timeout=300)
            done = min(jobs, start + 500)
            print(
                f"   {done:>6} jobs, {time.perf_counter() - started:6.0f} s, RSS "
                + ", ".join(f"{rss_mb(pid):.0f} MB" for pid in pids),
                flush=True,
            )
        assert {w["pid"] for w in service.live_workers()} == set(pids), "a worker was restarted during the run"
        after_all = {pid: rss_mb(pid) for pid in pids}
    rows = []
    for index, pid in enumerate(pids, start=1):
        before, after = after_100[pid], after_all[pid]
        print(
            f"   worker {pid}: {before:.0f} MB after 100 jobs, {after:.0f} MB after {done} jobs: {after / before:.2f}x"
        )
        rows.append({"worker": index, "jobs": done, "rss_after_100_mb": before, "rss_after_all_mb": after})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-sessions", action="store_true")
    args = parser.parse_args()
    settings = Settings.load(queue="embedq-bench-memory", workers=args.workers, cache=False)
    sessions = [] if args.skip_sessions else compare_sessions(settings.model_dir / "model.onnx", args.calls)
    save("memory", {"sessions": sessions, "workers": worker_memory(settings, args.jobs, args.workers)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
