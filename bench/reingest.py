"""Re-ingestion through the Batch API with the fleet-wide cache: a 50,000-line batch (one text a line, as
RAG ingestion writes them), then the same file with 10 % of its lines changed, on one fleet (2 workers, a
private Redis, the gateway). Upload to downloaded output, each run timed; the outputs compared line by
line where the text is the same. Results go to bench/results/reingest.json (then `./dev bench report`).

    ./dev bench reingest [--texts 50000] [--changed 0.1]"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import openai
from batch import batch_file, batch_output, distinct_lines, start_gateway
from benchlib import save

from embedq.config import Settings
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService


def run(client: openai.OpenAI, data: bytes, texts: int) -> tuple[float, dict[str, str]]:
    """Upload → create → poll → download: seconds, and each line's vector (base64) by custom_id."""
    started = time.perf_counter()
    output = batch_output(client, data, texts)
    elapsed = time.perf_counter() - started
    vectors = {}
    for line in output.splitlines():
        record = json.loads(line)
        vectors[record["custom_id"]] = record["response"]["body"]["data"][0]["embedding"]
    return elapsed, vectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=50_000)
    parser.add_argument("--changed", type=float, default=0.1)
    parser.add_argument("--stsb", type=Path)
    args = parser.parse_args()

    texts = distinct_lines(args.stsb, args.texts)
    rng = np.random.default_rng(0)
    changed = set(rng.choice(len(texts), int(args.changed * len(texts)), replace=False).tolist())
    edited = [f"{text} (edited)" if i in changed else text for i, text in enumerate(texts)]
    server = RedisServer(None, "--maxmemory-policy", "noeviction").start()
    settings = Settings.load(workers=2, redis_url=server.url, queue="reingest", log_level="WARNING")
    results: dict[str, Any] = {"workers": 2, "texts": args.texts, "changed": len(changed)}
    try:
        with tempfile.TemporaryDirectory() as work, LocalService(settings, log_path=Path(work) / "log"):
            gateway, url = start_gateway(settings, Path(work) / "files")
            try:
                client = openai.OpenAI(base_url=url, api_key="-", max_retries=0)
                first_s, first = run(client, batch_file(texts, "base64"), len(texts))
                print(f"first ingestion: {first_s:.1f} s ({len(texts) / first_s:,.0f} texts/s)", flush=True)
                second_s, second = run(client, batch_file(edited, "base64"), len(texts))
                print(f"again, {len(changed):,} lines changed: {second_s:.1f} s", flush=True)
            finally:
                gateway.terminate()
                gateway.wait(timeout=30)
    finally:
        server.cleanup()
    same = [f"t{i}" for i in range(len(texts)) if i not in changed]
    equal = sum(first[custom_id] == second[custom_id] for custom_id in same)
    results |= {
        "first_s": first_s,
        "second_s": second_s,
        "speedup": first_s / second_s,
        "unchanged_lines": len(same),
        "unchanged_lines_equal": equal,
    }
    print(f"second run {first_s / second_s:.1f}x faster; {equal:,} of {len(same):,} unchanged lines equal", flush=True)
    save("reingest", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
