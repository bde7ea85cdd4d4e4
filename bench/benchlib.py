"""What the benchmark scripts share: the corpus, side-by-side timing, and saving results as JSON
under bench/results/, from which bench/report.py makes BENCHMARKS.md and README's figures."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from embedq.worker.model.quality import load_stsb

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_STSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "stsbenchmark" / "sts-test.csv"
CORES = os.cpu_count() or 1


def stsb_path(given: Path | None) -> Path:
    """--stsb, else EMBEDQ_STSB, else the STS Benchmark beside this checkout."""
    return given or Path(os.environ.get("EMBEDQ_STSB", SHARED_STSB))


def mixed_corpus(stsb: Path, count: int) -> list[str]:
    """STS-B test sentences plus 1 in 16 long concatenations (truncated at the model's 256 tokens)."""
    first, second, _ = load_stsb(stsb)
    sentences = list(dict.fromkeys(first + second))
    rng = np.random.default_rng(0)
    long = [" ".join(rng.choice(sentences, 12)) for _ in range(count // 16)]
    texts = sentences[: count - len(long)] + long
    rng.shuffle(texts)
    return texts


def short_queries(count: int) -> list[str]:
    topics = ["cats", "stocks", "python", "weather"]
    return [f"search query number {i} about {topics[i % 4]}" for i in range(count)]


def side_by_side(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Alternate A and B `repeats` times; the medians of their rates."""
    rates_a, rates_b = [], []
    for _ in range(repeats):
        rates_a.append(a())
        rates_b.append(b())
    return statistics.median(rates_a), statistics.median(rates_b)


def rate(items: int, run: Callable[[], object]) -> Callable[[], float]:
    """A measurement: items per second of one call of `run`."""

    def measure() -> float:
        started = time.perf_counter()
        run()
        return items / (time.perf_counter() - started)

    return measure


def cpu_flags() -> tuple[str, list[str]]:
    """The CPU's model name and the SIMD flags int8 speed depends on (AVX2, AVX-512, VNNI), from /proc/cpuinfo."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor(), []
    fields = {
        key.strip(): value.strip() for key, value in (line.split(":", 1) for line in info.splitlines() if ":" in line)
    }
    flags = fields.get("flags", "").split()
    wanted = [flag for flag in flags if flag.startswith(("avx", "fma")) or "vnni" in flag or flag == "amx_int8"]
    return fields.get("model name", ""), sorted(wanted)


def machine() -> dict[str, Any]:
    import onnxruntime

    model, flags = cpu_flags()
    return {
        "cpu": platform.machine(),
        "cpu_model": model,
        "cpu_flags": flags,
        "cores": CORES,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def save(name: str, data: dict[str, Any]) -> Path:
    """bench/results/{name}.json, stamped with the script, the machine and the time."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "script": f"bench/{name}.py",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **data,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {path}; regenerate the published page with ./dev bench report")
    return path


def start_gateway(settings: Any, port: int) -> Any:
    """`embedq serve` in front of `settings`' queue, once it answers /health (a subprocess.Popen)."""
    import subprocess

    import httpx

    from embedq.worker.cli import embedq_command
    from embedq.worker.supervisor import settings_env

    gateway = subprocess.Popen(
        embedq_command("serve", "--port", str(port)), env=settings_env(settings), stderr=subprocess.DEVNULL
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return gateway
        except httpx.HTTPError:
            time.sleep(0.1)
    gateway.kill()
    raise RuntimeError("embedq serve did not start")
