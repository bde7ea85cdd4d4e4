"""The Batch API through faults, one gateway at a time (no other replica to take over): a worker
SIGKILLed and the driving gateway SIGKILLed mid-batch, and Redis (AOF) restarted mid-batch. Every
line ends in the output once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from redis import Redis

from embedq.broker.keys import BatchKeys
from embedq.broker.lanes import lane_queue
from embedq.broker.rq_private.records import queue_key
from embedq.local.redis_server import RedisServer
from embedq.local.service import LocalService
from tests.conftest import make_settings, start_gateway, wait_until
from tests.test_batches import outputs, sdk, stop, submit, varied_lines, wait_for


def completes_with_every_line_once(client, batch_id: str, lines: list[dict], timeout: float) -> None:  # type: ignore[no-untyped-def]
    batch = wait_for(client, batch_id, timeout=timeout)
    assert batch.status == "completed", batch
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (len(lines), len(lines), 0)
    done = outputs(client, batch.output_file_id)
    assert sorted(line["custom_id"] for line in done) == sorted(line["custom_id"] for line in lines)
    assert batch.error_file_id is None


def test_a_killed_worker_and_a_killed_gateway_mid_batch_lose_and_double_no_line(service, tmp_path: Path):
    """The next gateway takes the batch over once the dead one's lease has run out."""
    process, url = start_gateway(service.settings, EMBEDQ_FILES_DIR=str(tmp_path))
    lines = varied_lines(3000, seed=5)
    try:
        client = sdk(url)
        batch_id = submit(client, lines)
        wait_until(lambda: client.batches.retrieve(batch_id).request_counts.completed > 300, 120, "first chunks")
        victim = int(service.client.stats()["workers"][0]["name"].rsplit(".", 1)[1])
        os.kill(victim, signal.SIGKILL)
        process.kill()  # SIGKILL: its lease is not handed back
        process.wait()
        process, url = start_gateway(service.settings, EMBEDQ_FILES_DIR=str(tmp_path))
        client = sdk(url)
        assert client.batches.retrieve(batch_id).request_counts.completed < 3000
        completes_with_every_line_once(client, batch_id, lines, timeout=300)
        # nothing of the batch is left in the lane or in its list of jobs sent
        assert service.client.connection.llen(queue_key(lane_queue(service.settings.queue, "bulk"))) == 0
        assert not service.client.connection.exists(BatchKeys.of(cluster=False).jobs(batch_id))
        assert f"batch {batch_id} completed" in stop(process)  # the new gateway finalized it
    finally:
        if process.poll() is None:
            stop(process)


@pytest.fixture
def aof_redis():  # type: ignore[no-untyped-def]
    server = RedisServer(None, "--appendonly", "yes", "--appendfsync", "everysec").start()
    yield server
    server.cleanup()


def test_a_redis_restart_with_aof_mid_batch_loses_and_doubles_no_line(aof_redis, model_dir, tmp_path: Path):
    settings = make_settings(aof_redis.url, model_dir, retries=2, job_timeout=60)
    with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
        process, url = start_gateway(service.settings, EMBEDQ_FILES_DIR=str(tmp_path / "files"))
        try:
            client = sdk(url)
            lines = varied_lines(3000, seed=21)
            batch_id = submit(client, lines)
            wait_until(lambda: client.batches.retrieve(batch_id).request_counts.completed > 300, 120, "first chunks")
            Redis.from_url(aof_redis.url).shutdown()  # a clean stop: Redis writes its AOF out and exits
            assert aof_redis.process is not None
            aof_redis.process.wait(timeout=30)
            aof_redis.start()  # the same port and directory: it reloads the AOF
            completes_with_every_line_once(client, batch_id, lines, timeout=300)
        finally:
            stop(process)
