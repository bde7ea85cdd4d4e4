"""What a kill -9 of Redis costs with the shipped persistence (AOF, appendfsync everysec): jobs whose
`submit` had returned but that are gone after the restart. A producer submits one-text jobs as fast
as it can (no workers: they stay queued), Redis is SIGKILLed mid-stream and started again on its
AOF; lost = acknowledged jobs with no record after the restart, and the window = how long before
the kill the first lost one was acknowledged. Also with appendfsync always, for comparison.
Results go to bench/results/aof_loss.json (then `./dev bench report`).

    ./dev bench aof_loss [--repeats 3] [--seconds 4]"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import threading
import time
from typing import Any

from benchlib import save
from redis import Redis
from redis.exceptions import BusyLoadingError

from embedq import EmbedClient, QueueUnavailable
from embedq.broker.rq_private.records import job_key
from embedq.config import Settings
from embedq.local.redis_server import RedisServer


def one_kill(fsync: str, seconds: float) -> dict[str, Any]:
    server = RedisServer(None, "--appendonly", "yes", "--appendfsync", fsync).start()
    try:
        settings = Settings.load(redis_url=server.url, queue="aof-loss", max_queue_length=10_000_000)
        acknowledged: list[tuple[str, float]] = []
        stop = threading.Event()

        def produce() -> None:
            with EmbedClient(settings=settings) as client:
                i = 0
                while not stop.is_set():
                    try:
                        job_id = client.submit([f"text {i}"])
                    except QueueUnavailable:
                        return
                    acknowledged.append((job_id, time.monotonic()))
                    i += 1

        producer = threading.Thread(target=produce)
        producer.start()
        time.sleep(seconds)
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        server.process.wait()
        stop.set()
        producer.join()
        server.start()
        with Redis.from_url(server.url) as connection:
            while True:  # until the AOF is loaded
                try:
                    connection.ping()
                    break
                except BusyLoadingError:
                    time.sleep(0.05)
            acked_before_kill = [(job_id, at) for job_id, at in acknowledged if at <= killed]
            with connection.pipeline(transaction=False) as pipe:
                for job_id, _ in acked_before_kill:
                    pipe.exists(job_key(job_id))
                present = pipe.execute()
        lost = [at for (_, at), there in zip(acked_before_kill, present) if not there]
        return {
            "acknowledged": len(acked_before_kill),
            "lost": len(lost),
            "window_ms": (killed - min(lost)) * 1000 if lost else 0.0,
        }
    finally:
        server.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    for fsync in ("everysec", "always"):
        runs = [one_kill(fsync, args.seconds) for _ in range(args.repeats)]
        results[fsync] = {
            "runs": runs,
            "lost_median": statistics.median(run["lost"] for run in runs),
            "window_ms_max": max(run["window_ms"] for run in runs),
            "submits_per_s": statistics.median(run["acknowledged"] for run in runs) / args.seconds,
        }
        print(f"appendfsync {fsync}: {results[fsync]}", flush=True)
    save("aof_loss", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
