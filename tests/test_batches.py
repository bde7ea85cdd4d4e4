"""OpenAI's Batch API on `embedq serve`, driven with the official openai SDK: real gateways (two
replicas sharing one files directory), real workers, the real model."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from redis import Redis

from embedq.broker.keys import BatchKeys
from embedq.broker.lanes import lane_queue
from embedq.local.service import LocalService
from embedq.worker.supervisor.spawn import embedq_command, settings_env
from tests.conftest import KEY, MODEL, start_gateway, wait_until

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "embeddings",
    "map",
    "meaning",
    "into",
    "vectors",
    "near",
    "each",
    "other",
]
FINAL = ("completed", "failed", "expired", "cancelled")
RECORDS = BatchKeys.of(cluster=False)


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60)))


def request_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def stop(process: subprocess.Popen[bytes]) -> str:
    process.terminate()
    try:
        output = process.communicate(timeout=30)[0].decode()
    except subprocess.TimeoutExpired:
        process.kill()
        output = process.communicate()[0].decode()
    assert KEY not in output  # keys are never logged
    return output


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("files")


@pytest.fixture(scope="module")
def replicas(service: LocalService, files_dir: Path) -> Iterator[list[str]]:
    """Two `embedq serve` replicas in front of the module's service, sharing one files directory."""
    started = [start_gateway(service.settings, EMBEDQ_FILES_DIR=str(files_dir)) for _ in range(2)]
    yield [url for _, url in started]
    for process, _ in started:
        stop(process)


def sdk(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def wait_for(client: openai.OpenAI, batch_id: str, timeout: float, until: tuple[str, ...] = FINAL) -> Any:
    """Poll as a client would: a 503 (Redis away for a moment, Retry-After) means ask again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            batch = client.batches.retrieve(batch_id)
        except openai.InternalServerError as error:
            assert error.status_code == 503 and time.monotonic() < deadline, error
            time.sleep(0.5)
            continue
        if batch.status in until:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status} ({batch.request_counts})"
        time.sleep(0.5)


def outputs(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def vectors_of(line: dict[str, Any]) -> np.ndarray:
    rows = []
    for item in line["response"]["body"]["data"]:
        embedding = item["embedding"]
        if isinstance(embedding, str):
            embedding = np.frombuffer(base64.b64decode(embedding), dtype="<f4")
        rows.append(np.asarray(embedding, dtype=np.float32))
    return np.stack(rows)


def submit(client: openai.OpenAI, lines: list[dict[str, Any]]) -> str:
    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    assert uploaded.bytes == len(jsonl(lines)) and uploaded.purpose == "batch"
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h", metadata={"run": "test"}
    )
    assert batch.status == "validating" and batch.metadata == {"run": "test"}
    return batch.id


def varied_lines(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Lines of one text or a list of up to 6, some asking 128 dimensions, some base64."""
    rng = random.Random(seed)
    lines = []
    for number in range(count):
        body: dict[str, Any] = {"model": MODEL}
        body["input"] = sentence(rng) if number % 3 else [sentence(rng) for _ in range(rng.randint(1, 6))]
        if number % 7 == 0:
            body["dimensions"] = 128
        if number % 5 == 0:
            body["encoding_format"] = "base64"
        lines.append(request_line(f"req-{number}", body))
    return lines


def test_2000_lines_through_the_sdk_give_v1_embeddings_vectors_one_line_each(replicas):
    """Created on one replica, polled and downloaded on the other; bad texts fail their line alone."""
    first, second = sdk(replicas[0]), sdk(replicas[1])
    lines = varied_lines(2000)
    bad = {17: "", 404: ["fine", ""], 1500: "x" * 30_000}  # empty, empty in a list, over MAX_CHARS_PER_TEXT
    for number, text in bad.items():
        lines[number]["body"]["input"] = text
    batch_id = submit(first, lines)
    started = time.monotonic()
    batch = wait_for(second, batch_id, timeout=240)
    print(f"batch of {len(lines)} lines: {batch.status} in {time.monotonic() - started:.1f} s")
    assert batch.status == "completed", batch
    assert batch.request_counts.total == 2000
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1997, 3)
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at

    done, failed = outputs(second, batch.output_file_id), outputs(second, batch.error_file_id)
    assert len(done) == 1997 and len(failed) == 3
    ids = [line["custom_id"] for line in done + failed]
    assert sorted(ids) == sorted(line["custom_id"] for line in lines)  # every line once
    assert {line["custom_id"] for line in failed} == {f"req-{number}" for number in bad}
    for line in failed:
        assert line["response"]["status_code"] == 400
        assert "input[" in line["response"]["body"]["error"]["message"]

    by_id = {line["custom_id"]: line for line in done}
    sample = random.Random(3).sample([line for line in lines if line["custom_id"] in by_id], 60)
    for request in sample:
        line = by_id[request["custom_id"]]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        body = request["body"]
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        got = vectors_of(line)
        assert got.shape == (len(texts), body.get("dimensions", 384))
        direct = first.embeddings.create(
            model=MODEL, input=texts, dimensions=body.get("dimensions", openai.NOT_GIVEN), encoding_format="float"
        )
        want = np.array([item.embedding for item in direct.data], dtype=np.float32)
        cosines = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cosines.min() >= 0.9999, (request["custom_id"], cosines)
        encoded = [item["embedding"] for item in line["response"]["body"]["data"]]
        assert all(isinstance(e, str) for e in encoded) == (body.get("encoding_format") == "base64")
        assert line["response"]["body"]["usage"]["prompt_tokens"] == direct.usage.prompt_tokens

    listed = second.batches.list(limit=100)
    assert batch_id in [b.id for b in listed.data]
    assert second.files.retrieve(batch.output_file_id).purpose == "batch_output"


def test_a_malformed_file_fails_naming_its_lines_and_enqueues_nothing(replicas, service, redis):
    client = sdk(replicas[0])
    lines = [json.dumps(line) for line in varied_lines(6)]
    lines[1] = "{not json"
    lines[2] = json.dumps(request_line("req-2", {"model": MODEL, "input": "a"}) | {"url": "/v1/chat/completions"})
    lines[3] = json.dumps(request_line("req-3", {"model": "no-such-model", "input": "a"}))
    lines[5] = json.dumps(request_line("req-0", {"model": MODEL, "input": "a"}))  # custom_id of line 1 again
    uploaded = client.files.create(file=("bad.jsonl", io.BytesIO("\n".join(lines).encode())), purpose="batch")
    bulk = lane_queue(service.settings.queue, "bulk")
    jobs_before = redis.llen(f"rq:queue:{bulk}")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    batch = wait_for(client, batch.id, timeout=30)
    assert batch.status == "failed" and batch.failed_at
    errors = {(e.line, e.code) for e in batch.errors.data}
    assert errors == {(2, "invalid_json_line"), (3, "invalid_url"), (4, "model_not_found"), (6, "duplicate_custom_id")}
    assert "line 1" in next(e.message for e in batch.errors.data if e.code == "duplicate_custom_id")
    assert redis.llen(f"rq:queue:{bulk}") == jobs_before == 0
    assert batch.request_counts.completed == 0 and batch.output_file_id is None


def test_cancel_mid_run_ends_cancelled_with_counts_that_add_up(replicas, service, redis):
    client = sdk(replicas[1])
    lines = varied_lines(4000, seed=11)
    batch_id = submit(client, lines)
    wait_until(
        lambda: client.batches.retrieve(batch_id).request_counts.completed > 200, 120, "the batch's first chunks"
    )
    cancelling = client.batches.cancel(batch_id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    batch = wait_for(client, batch_id, timeout=60)
    assert batch.status == "cancelled" and batch.cancelled_at
    counts = batch.request_counts
    assert counts.total == 4000 and 200 < counts.completed < 4000 and counts.failed == 0
    done = outputs(client, batch.output_file_id)
    assert len(done) == counts.completed == len({line["custom_id"] for line in done})
    bulk = lane_queue(service.settings.queue, "bulk")
    wait_until(lambda: redis.llen(f"rq:queue:{bulk}") == 0, 30, "the cancelled batch's jobs leaving the bulk lane")
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(wait_for(client, submit(client, varied_lines(3)), timeout=60).id)


def test_a_batch_past_its_window_expires_with_its_unrun_lines_in_the_error_file(replicas, redis):
    client = sdk(replicas[0])
    lines = varied_lines(4000, seed=17)
    batch_id = submit(client, lines)
    wait_until(lambda: client.batches.retrieve(batch_id).request_counts.completed > 200, 120, "first chunks")
    redis.hset(RECORDS.batch(batch_id), "expires_at", int(time.time()) - 1)  # its 24 h are over
    batch = wait_for(client, batch_id, timeout=60)
    assert batch.status == "expired" and batch.expired_at
    counts = batch.request_counts
    done, failed = outputs(client, batch.output_file_id), outputs(client, batch.error_file_id)
    assert 200 < counts.completed == len(done) < 4000 and counts.failed == len(failed)
    assert counts.completed + counts.failed == 4000
    assert {line["error"]["code"] for line in failed} == {"batch_expired"}
    assert sorted(line["custom_id"] for line in done + failed) == sorted(line["custom_id"] for line in lines)


def test_a_key_sees_only_its_own_files_and_batches(service, files_dir):
    process, url = start_gateway(service.settings, EMBEDQ_FILES_DIR=str(files_dir), EMBEDQ_API_KEYS=f"{KEY},other")
    try:
        mine, theirs = sdk(url), sdk(url, "other")
        batch_id = submit(mine, varied_lines(2))
        input_id = mine.batches.retrieve(batch_id).input_file_id
        with pytest.raises(openai.NotFoundError):
            theirs.batches.retrieve(batch_id)
        with pytest.raises(openai.NotFoundError):
            theirs.files.content(input_id)
        assert batch_id not in [b.id for b in theirs.batches.list().data]
        assert input_id not in [f.id for f in theirs.files.list().data]
        assert wait_for(mine, batch_id, timeout=60).status == "completed"
        for key in (RECORDS.file(input_id), RECORDS.batch(batch_id)):  # kept FILES_RETENTION, 30 days by default
            assert 29 * 86400 < Redis.from_url(service.settings.redis_url).ttl(key) <= 30 * 86400
        assert mine.files.delete(input_id).deleted
        with pytest.raises(openai.NotFoundError):
            mine.files.retrieve(input_id)
    finally:
        stop(process)


def test_line_and_byte_limits_hold_at_their_exact_boundary(service, files_dir):
    process, url = start_gateway(
        service.settings, EMBEDQ_FILES_DIR=str(files_dir), EMBEDQ_BATCH_MAX_LINES="5", EMBEDQ_FILES_MAX_BYTES="4000"
    )
    try:
        client = sdk(url)
        short = [request_line(f"r{n}", {"model": MODEL, "input": "short"}) for n in range(6)]
        at_limit = wait_for(client, submit(client, short[:5]), timeout=60)  # exactly BATCH_MAX_LINES
        assert at_limit.status == "completed" and at_limit.request_counts.completed == 5
        batch = wait_for(client, submit(client, short), timeout=30)
        assert batch.status == "failed" and batch.errors.data[0].code == "too_many_requests"
        exact = client.files.create(file=("exact.jsonl", io.BytesIO(b"x" * 4000)), purpose="batch")
        assert exact.bytes == 4000  # exactly FILES_MAX_BYTES
        client.files.delete(exact.id)
        with pytest.raises(openai.APIStatusError) as refused:
            client.files.create(file=("big.jsonl", io.BytesIO(b"x" * 4001)), purpose="batch")
        assert refused.value.status_code == 413
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=("a.jsonl", io.BytesIO(b"{}")), purpose="fine-tune")
    finally:
        stop(process)


def test_unknown_paths_and_bad_parameters_get_openai_error_bodies(replicas):
    headers = {"Authorization": f"Bearer {KEY}"}
    missing = httpx.get(f"{replicas[0]}/v1/nothing-here", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    bad = httpx.get(f"{replicas[0]}/v1/batches", params={"limit": "many"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    no_file = httpx.post(f"{replicas[0]}/v1/files", data={"purpose": "batch"}, headers=headers)
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"


def test_the_cli_lists_shows_and_cancels_batches(replicas, service):
    client = sdk(replicas[0])
    batch_id = submit(client, varied_lines(3000, seed=9))
    env = {**os.environ, **settings_env(service.settings)}

    def embedq(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(embedq_command("batches", *args), env=env, capture_output=True, text=True, timeout=60)

    listed = embedq("list")
    assert listed.returncode == 0 and batch_id in listed.stdout, listed.stderr
    shown = embedq("show", batch_id)
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == batch_id
    assert embedq("cancel", batch_id).returncode == 0
    assert wait_for(client, batch_id, timeout=60).status == "cancelled"
    missing = embedq("show", "batch_nope")
    assert missing.returncode != 0 and "batch_nope" in missing.stderr and "Traceback" not in missing.stderr


def test_the_status_page_shows_running_batches_as_counts_only(replicas):
    client = sdk(replicas[0])
    batch_id = submit(client, varied_lines(3000, seed=13))
    try:
        wait_until(lambda: httpx.get(f"{replicas[1]}/status.json").json()["batches"], 30, "a running batch on the page")
        shown = httpx.get(f"{replicas[1]}/status.json").json()["batches"]
        assert set(shown[0]) == {"status", "total", "completed", "failed", "created_at"}
        assert "req-" not in json.dumps(shown) and "input.jsonl" not in json.dumps(shown)
    finally:
        client.batches.cancel(batch_id)
        wait_for(client, batch_id, timeout=60)


def test_no_batch_is_left_running(redis: Redis):
    """The module's batches all ended: none is left for another module's gateway to pick up."""
    assert redis.scard(RECORDS.active) == 0
