"""What the benchmark scripts share: the corpus, side-by-side timing, and saving results as JSON
under bench/results/, from which bench/report.py makes BENCHMARKS.md and README's figures."""

from __future__ import annotations

import http.client
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from embedq.worker.model.quality import load_stsb

K = TypeVar("K")
T = TypeVar("T")
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


def alternate(measures: dict[K, Callable[[], float]], repeats: int) -> dict[K, list[float]]:
    """Each measure `repeats` times, taking turns, so drift on the machine hits every one alike: the samples."""
    samples: dict[K, list[float]] = {key: [] for key in measures}
    for _ in range(repeats):
        for key, measure in measures.items():
            samples[key].append(measure())
    return samples


def side_by_side(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Alternate A and B `repeats` times; the medians of their rates."""
    samples = alternate({"a": a, "b": b}, repeats)
    return statistics.median(samples["a"]), statistics.median(samples["b"])


def summary(times: list[float]) -> dict[str, float]:
    """p50 and p95 (interpolated, as numpy's percentile) of latencies in ms, and how many there were."""
    return {"p50_ms": statistics.median(times), "p95_ms": float(np.percentile(times, 95)), "samples": len(times)}


def concurrent_rate(ask: Callable[[T], object], items: list[T], clients: int, per_item: int = 1) -> float:
    """Items per second (times `per_item`) of `ask` over `items` from `clients` threads at once."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(ask, items))
    return len(items) * per_item / (time.perf_counter() - started)


def p50_ms(ask: Callable[[str], object], texts: list[str]) -> float:
    """Median latency of `ask`, one text at a time with a pause between (an idle server)."""
    times = []
    for text in texts:
        started = time.perf_counter()
        ask(text)
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    return statistics.median(times)


class KeepAlive:
    """POST JSON over one HTTP/1.1 keep-alive connection per thread (the standard library's http.client).
    On 2 shared cores the load generator competes with the server it measures, and httpx (the openai
    SDK's transport) spends ~4x the CPU per request of http.client here: this measures the server."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.prefix = parts.hostname or "127.0.0.1", parts.port or 80, parts.path.rstrip("/")
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.local = threading.local()

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        data = json.dumps(body).encode()
        sent = {**self.headers, **(headers or {})}
        connection = getattr(self.local, "connection", None)
        if connection is not None:
            try:
                return self.exchange(connection, path, data, sent)
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                connection.close()  # the server closed it while idle (uvicorn: after 5 s): open another
        self.local.connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        return self.exchange(self.local.connection, path, data, sent)

    def exchange(self, connection: http.client.HTTPConnection, path: str, data: bytes, headers: dict[str, str]) -> Any:
        connection.request("POST", self.prefix + path, data, headers)
        answer = connection.getresponse()
        content = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {answer.status}: {content[:200]!r}")
        return json.loads(content)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate(items: int, run: Callable[[], object]) -> Callable[[], float]:
    """A measurement: items per second of one call of `run`."""

    def measure() -> float:
        started = time.perf_counter()
        run()
        return items / (time.perf_counter() - started)

    return measure


def cpu_model() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")


def machine() -> dict[str, Any]:
    import onnxruntime

    from embedq.worker.model.quantize import simd_flags

    return {
        "cpu": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_flags": simd_flags(),  # int8 speed depends on them (VNNI or not)
        "cores": CORES,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def save(name: str, data: dict[str, Any], script: str | None = None) -> Path:
    """bench/results/{name}.json, stamped with the script (bench/{script or name}.py), the machine and the time."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    record = {
        "script": f"bench/{script or name}.py",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **data,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {path}; regenerate the published page with ./dev bench report")
    return path


def start_gateway(settings: Any, port: int, extra: dict[str, str] | None = None) -> Any:
    """`embedq serve` in front of `settings`' queue, once it answers /health (a subprocess.Popen);
    `extra`: more EMBEDQ_* variables."""
    import subprocess

    import httpx

    from embedq.worker.supervisor.spawn import embedq_command, settings_env

    gateway = subprocess.Popen(
        embedq_command("serve", "--port", str(port)),
        env={**settings_env(settings), **(extra or {})},
        stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return gateway
        except httpx.HTTPError:
            time.sleep(0.1)
    gateway.kill()
    raise RuntimeError("embedq serve did not start")
