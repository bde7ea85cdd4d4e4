"""The HTTP gateway against the Python client, same workers (2), side by side, alternating: one-text
requests from 16 concurrent clients (throughput), one-text requests one at a time on an idle fleet
(p50 latency), and the response of 512 texts as float JSON vs base64 (bytes and time).
Results go to bench/results/gateway.json (then `./dev bench report`).

    ./dev bench gateway [--requests 800] [--repeats 3]"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import httpx
from benchlib import concurrent_rate, p50_ms, save, short_queries, side_by_side, start_gateway

from embedq import EmbedClient
from embedq.config import Settings
from embedq.worker.local.service import LocalService

MODEL = "all-MiniLM-L6-v2"
PORT = 8765
CLIENTS = 16


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.load(queue="embedq-bench-gateway", workers=2)
    with LocalService(settings, log_path=Path("/tmp/embedq-bench-gateway.log")) as service:
        gateway = start_gateway(service.settings, PORT)
        url = f"http://127.0.0.1:{PORT}"
        try:
            http = httpx.Client(base_url=url, limits=httpx.Limits(max_connections=32), timeout=60)
            client = EmbedClient(settings=service.settings)

            def via_gateway(text: str) -> None:  # as the official SDKs ask: base64
                body = {"model": MODEL, "input": text, "encoding_format": "base64"}
                http.post("/v1/embeddings", json=body).raise_for_status()

            def via_client(text: str) -> None:
                client.embed([text], timeout=60)

            queries = short_queries(args.requests)
            via_gateway("warm-up")
            gateway_rate, client_rate = side_by_side(
                lambda: concurrent_rate(via_gateway, queries, CLIENTS),
                lambda: concurrent_rate(via_client, queries, CLIENTS),
                args.repeats,
            )
            idle = queries[:200]
            gateway_p50, client_p50 = side_by_side(
                lambda: p50_ms(via_gateway, idle), lambda: p50_ms(via_client, idle), args.repeats
            )
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
    results = {
        "concurrent_clients": CLIENTS,
        "requests": args.requests,
        "single_text_16_clients": {
            "gateway_rps": gateway_rate,
            "client_rps": client_rate,
            "ratio": gateway_rate / client_rate,
        },
        "idle_latency_p50_ms": {"gateway": gateway_p50, "client": client_p50, "added": gateway_p50 - client_p50},
        "response_512_texts": {
            encoding: {"bytes": sizes[encoding], "ms": times[encoding]} for encoding in ("float", "base64")
        },
    }
    for key, value in results.items():
        print(f"  {key}: {value}")
    save("gateway", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
