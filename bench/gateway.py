"""The HTTP gateway against the Python client, same workers (2), side by side, alternating: one-text
requests from 16 concurrent clients (throughput), one-text requests one at a time on an idle fleet
(p50 latency), and the response of 512 texts as float JSON vs base64 (bytes and time). HTTP load comes
from the standard library's http.client (benchlib.KeepAlive: the goals are about the gateway, and on 2
shared cores a costlier client library takes the cores it measures) and, for comparison, from httpx, the
openai SDK's transport. Then the gateway's own ceiling: the same requests with the queue answering at
once (workers serving a one-layer model of the same width), and the gateway's CPU per request. And
the floors under the idle latency: one Redis PING, and one request to the smallest uvicorn app
(bench/http_floor_app.py, the gateway's loop and parser).
Results go to bench/results/gateway.json (then `./dev bench report`).

    ./dev bench gateway [--requests 800] [--repeats 3]"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from benchlib import (
    KeepAlive,
    alternate,
    concurrent_rate,
    p50_ms,
    process_cpu_seconds,
    save,
    short_queries,
    start_gateway,
)

from embedq import EmbedClient
from embedq.config import Settings
from embedq.local.service import LocalService

MODEL = "all-MiniLM-L6-v2"
PORT = 8765
CLIENTS = 16
CEILING_CLIENTS = 32
INSTANT = "instant-one-layer"  # the model directory's name is the served model's name


def one_text(model: str, text: str) -> dict[str, Any]:  # as the official SDKs ask: base64
    return {"model": model, "input": text, "encoding_format": "base64"}


def instant_model(directory: Path) -> Path:
    """all-MiniLM-L6-v2's tokenizer and width with one tiny transformer layer of random weights: its
    vectors mean nothing, and the workers answer almost at once, so the gateway bounds the rate."""
    from transformers import BertConfig, BertModel

    from embedq.worker.model.export import copy_model_files, default_source, export_graph

    source = default_source()
    config = BertConfig.from_pretrained(source, num_hidden_layers=1, intermediate_size=1)
    copy_model_files(source, directory)
    config.save_pretrained(directory)
    export_graph(BertModel(config, add_pooling_layer=False).eval(), directory / "model.onnx")
    return directory


def start_floor_app(port: int) -> subprocess.Popen[bytes]:
    """bench/http_floor_app.py under uvicorn with the gateway's loop and parser, once it answers."""
    serve = ["--port", str(port), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
    app = ["http_floor_app:app", "--app-dir", str(Path(__file__).parent)]
    floor = subprocess.Popen([sys.executable, "-m", "uvicorn", *app, *serve])
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return floor
        except OSError:
            time.sleep(0.1)
    floor.kill()
    raise RuntimeError("the floor app did not start")


def compare(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings.load(queue="embedq-bench-gateway", workers=2, cache=False)
    with LocalService(settings, log_path=Path("/tmp/embedq-bench-gateway.log")) as service:
        gateway = start_gateway(service.settings, PORT)
        url = f"http://127.0.0.1:{PORT}"
        try:
            plain = KeepAlive(url)
            http = httpx.Client(base_url=url, limits=httpx.Limits(max_connections=32), timeout=60)
            client = EmbedClient(settings=service.settings)
            ask = {
                "gateway": lambda text: plain.post("/v1/embeddings", one_text(MODEL, text)),
                "gateway_httpx": lambda text: http.post(
                    "/v1/embeddings", json=one_text(MODEL, text)
                ).raise_for_status(),
                "client": lambda text: client.embed([text], timeout=60),
            }
            queries = short_queries(args.requests)
            for way in ask.values():
                way("warm-up")
            cpu_ms: list[float] = []

            def gateway_rate() -> float:
                before = process_cpu_seconds(gateway.pid)
                measured = concurrent_rate(ask["gateway"], queries, CLIENTS)
                cpu_ms.append((process_cpu_seconds(gateway.pid) - before) / len(queries) * 1000)
                return measured

            rates = alternate(
                {
                    "gateway": gateway_rate,
                    "gateway_httpx": lambda: concurrent_rate(ask["gateway_httpx"], queries, CLIENTS),
                    "client": lambda: concurrent_rate(ask["client"], queries, CLIENTS),
                },
                args.repeats,
            )
            idle = queries[:200]
            floor = start_floor_app(PORT + 2)
            bare = KeepAlive(f"http://127.0.0.1:{PORT + 2}")
            floors = {
                "redis_ping": lambda _: client.connection.ping(),
                "uvicorn_smallest_app": lambda text: bare.post("/", one_text(MODEL, text)),
            }
            for way in floors.values():
                way("warm-up")
            try:
                latencies = alternate(
                    {way: (lambda way=way: p50_ms({**ask, **floors}[way], idle)) for way in [*ask, *floors]},
                    args.repeats,
                )
            finally:
                floor.terminate()
                floor.wait(timeout=30)
            texts = short_queries(512)
            sizes, times = {}, {}
            for encoding in ("float", "base64"):
                samples = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    answer = http.post(
                        "/v1/embeddings", json={"model": MODEL, "input": texts, "encoding_format": encoding}
                    )
                    samples.append((time.perf_counter() - started) * 1000)
                    sizes[encoding] = len(answer.content)
                times[encoding] = statistics.median(samples)
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    rps = {way: statistics.median(samples) for way, samples in rates.items()}
    p50 = {way: statistics.median(samples) for way, samples in latencies.items()}
    return {
        "single_text_16_clients": {
            "gateway_rps": rps["gateway"],
            "client_rps": rps["client"],
            "ratio": rps["gateway"] / rps["client"],
            "ratios": [g / c for g, c in zip(rates["gateway"], rates["client"])],
            "gateway_cpu_ms_per_request": statistics.median(cpu_ms),
            "httpx_rps": rps["gateway_httpx"],
            "httpx_ratio": rps["gateway_httpx"] / rps["client"],
        },
        "idle_latency_p50_ms": {
            "gateway": p50["gateway"],
            "client": p50["client"],
            "added": p50["gateway"] - p50["client"],
            "httpx": p50["gateway_httpx"],
            "httpx_added": p50["gateway_httpx"] - p50["client"],
            "floors": {way: p50[way] for way in ("redis_ping", "uvicorn_smallest_app")},
        },
        "response_512_texts": {
            encoding: {"bytes": sizes[encoding], "ms": times[encoding]} for encoding in ("float", "base64")
        },
    }


def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """One gateway process with the queue answering at once: requests/s, and its CPU per request (so
    1000 / cpu_ms is what one core of gateway could answer)."""
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = instant_model(Path(scratch) / INSTANT)
        settings = Settings.load(queue="embedq-bench-ceiling", workers=2, model_dir=model_dir, cache=False)
        with LocalService(settings, log_path=Path("/tmp/embedq-bench-ceiling.log")) as service:
            gateway = start_gateway(service.settings, PORT + 1)
            try:
                plain = KeepAlive(f"http://127.0.0.1:{PORT + 1}")
                queries = short_queries(args.requests * 4)
                plain.post("/v1/embeddings", one_text(INSTANT, "warm-up"))
                samples, cpu_ms = [], []
                for _ in range(args.repeats):
                    before = process_cpu_seconds(gateway.pid)
                    samples.append(
                        concurrent_rate(
                            lambda text: plain.post("/v1/embeddings", one_text(INSTANT, text)), queries, CEILING_CLIENTS
                        )
                    )
                    cpu_ms.append((process_cpu_seconds(gateway.pid) - before) / len(queries) * 1000)
            finally:
                gateway.terminate()
                gateway.wait(timeout=30)
    cpu = statistics.median(cpu_ms)
    return {
        "clients": CEILING_CLIENTS,
        "rps": statistics.median(samples),
        "gateway_cpu_ms_per_request": cpu,
        "rps_per_gateway_core": 1000 / cpu,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {
        "concurrent_clients": CLIENTS,
        "requests": args.requests,
        "load_generator": "http.client keep-alive (httpx figures beside it)",
        **compare(args),
        "ceiling": ceiling(args),
    }
    for key, value in results.items():
        print(f"  {key}: {value}")
    save("gateway", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
