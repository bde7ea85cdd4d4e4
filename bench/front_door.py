"""What abuse of the front door costs, measured: peak memory (VmHWM) of the gateway while it checks a
batch input, and of a worker refusing a zlib bomb next to a worker running the largest valid job.

    ./dev bench front_door [--junk-mb 200] [--lines 50000] [--bomb-mb 500]

1. Gateway: a file of --junk-mb MB of junk lines ("x"), and a valid file of --lines lines (one text of
   ~4 KB each, ~200 MB), each uploaded and created as a batch; peak RSS growth over the gateway's
   peak before, and the seconds from create to the end of validation.
2. Worker (default limits, fresh worker each): a --bomb-mb MB zlib bomb as job data, and the largest
   valid job (MAX_TEXTS_PER_JOB texts of MAX_CHARS_PER_TEXT 4-byte characters); peak RSS growth over
   the worker's idle RSS.
Results go to bench/results/front_door.json (then `./dev bench report`)."""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import openai
from benchlib import save, start_gateway
from redis import Redis
from rq import Queue, Retry

from embedq.broker.jobs import EMBED_TASK, MsgpackSerializer
from embedq.config import DEFAULT_MODEL_DIR, Settings
from embedq.errors import JobFailed
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService

KEY = "sk-bench"


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def gateway_run(settings: Settings, port: int, files_dir: str, name: str, data: bytes) -> dict[str, Any]:
    gateway = start_gateway(settings, port, extra={"EMBEDQ_FILES_DIR": files_dir, "EMBEDQ_API_KEYS": KEY})
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=600)
        before = status_kb(gateway.pid, "VmHWM")
        uploaded = client.files.create(file=(name, io.BytesIO(data)), purpose="batch")
        after_upload = status_kb(gateway.pid, "VmHWM")
        started = time.monotonic()
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
        while (batch := client.batches.retrieve(batch.id)).status == "validating":
            time.sleep(0.05)
        seconds = time.monotonic() - started
        peak = status_kb(gateway.pid, "VmHWM")
        if batch.status == "in_progress":
            client.batches.cancel(batch.id)
        errors = [error.code for error in batch.errors.data] if batch.errors else []
        row = {
            "file": name,
            "file_mb": round(len(data) / 2**20, 1),
            "status_after_validation": batch.status,
            "errors": errors[:3],
            "upload_peak_growth_mb": mb(after_upload - before),
            "validation_peak_growth_mb": mb(peak - before),
            "validation_s": round(seconds, 2),
        }
        print(json.dumps(row))
        return row
    finally:
        gateway.terminate()
        gateway.wait(timeout=60)


def push_raw(connection: Redis, queue: str, data: bytes) -> str:
    """A job whose stored data is `data`, as anyone who can write to Redis could make it."""
    rq_queue = Queue(queue, connection=connection, serializer=MsgpackSerializer)
    with connection.pipeline() as pipe:
        job = rq_queue.enqueue_call(EMBED_TASK, args=({"v": 1, "texts": ["x"]},), pipeline=pipe, retry=Retry(max=1))
        pipe.hset(job.key, mapping={"data": data})
        pipe.execute()
    return str(job.id)


def zlib_bomb(megabytes: int) -> bytes:
    squeeze = zlib.compressobj(9)
    chunk = b"\0" * 2**20
    return b"".join(squeeze.compress(chunk) for _ in range(megabytes)) + squeeze.flush()


def worker_run(settings: Settings, log: Path, what: str, bomb_mb: int) -> dict[str, Any]:
    with LocalService(settings, workers=1, log_path=log) as service:
        pid = int(service.live_workers()[0]["pid"])
        idle = status_kb(pid, "VmRSS")
        limits = settings.limits
        started = time.monotonic()
        if what == "bomb":
            job_id = push_raw(service.client.connection, settings.queue, zlib_bomb(bomb_mb))
            try:
                service.client.wait(job_id, timeout=300)
                outcome = "embedded (unexpected)"
            except JobFailed as error:
                outcome = f"refused: {error.reason[:80]}"
        else:
            texts = ["\U0001f600" * limits.max_chars_per_text] * limits.max_texts_per_job
            service.client.wait(service.client.submit(texts), timeout=600)
            outcome = f"{len(texts)} texts of {limits.max_chars_per_text} 4-byte characters embedded"
        row = {
            "job": what,
            "outcome": outcome,
            "idle_rss_mb": mb(idle),
            "peak_growth_mb": mb(status_kb(pid, "VmHWM") - idle),
            "seconds": round(time.monotonic() - started, 1),
        }
        print(json.dumps(row))
        service.stop()
        return row


def main(args: argparse.Namespace) -> None:
    redis = RedisServer().start()
    try:
        base = Settings(redis_url=redis.url, model_dir=Path(DEFAULT_MODEL_DIR), workers=1, queue="front-door")
        files_dir = tempfile.mkdtemp(prefix="embedq-bench-files-")
        with tempfile.TemporaryDirectory() as scratch:
            with LocalService(base, workers=1, log_path=Path(scratch) / "gateway-run.log"):
                junk = b"x\n" * (args.junk_mb * 2**20 // 2)
                text = " ".join(["embedding"] * 400)  # ~4 KB
                valid = b"".join(
                    json.dumps(
                        {
                            "custom_id": f"line-{n}",
                            "method": "POST",
                            "url": "/v1/embeddings",
                            "body": {"model": "all-MiniLM-L6-v2", "input": f"{n} {text}"},
                        }
                    ).encode()
                    + b"\n"
                    for n in range(args.lines)
                )
                gateway = [
                    gateway_run(base, 18555, files_dir, "junk.jsonl", junk),
                    gateway_run(base, 18556, files_dir, "valid.jsonl", valid),
                ]
            workers = [
                worker_run(
                    base.model_copy(update={"queue": f"front-door-{n}"}), Path(scratch) / f"{n}.log", what, args.bomb_mb
                )
                for n, what in enumerate(("bomb", "largest valid job"))
            ]
        save("front_door", {"args": vars(args), "gateway": gateway, "workers": workers})
    finally:
        redis.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junk-mb", type=int, default=200)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--bomb-mb", type=int, default=500)
    main(parser.parse_args())
