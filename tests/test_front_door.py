"""`embedq serve` under abuse, as an attacker or a careless client would use it: slow and silent
connections, too many of them, oversized batch metadata and names, a key filling the file store,
a full disk, deleting a running batch's input. Real gateways, real workers, the official SDK."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedq.broker.lanes import lane_queue
from embedq.broker.rq_private.records import queue_key
from embedq.local.service import LocalService
from tests.conftest import KEY, MODEL, embed_over_http, start_gateway, wait_until
from tests.test_batches import jsonl, request_line, sdk, stop, wait_for

# keys of this module's own (the quota is per key across the Redis the whole test session shares)
MINE, OTHER_KEY = f"sk-door-{uuid.uuid4().hex[:8]}", f"sk-door-{uuid.uuid4().hex[:8]}"


def open_socket(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (a read returns EOF or a reset)."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def trickle(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    """Send `data` a byte every half second, as a slowloris client does, until the server closes."""
    for byte in data:
        if stop.wait(0.5):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


@pytest.fixture(scope="module")
def guarded(service: LocalService) -> Iterator[str]:
    process, url = start_gateway(service.settings, EMBEDQ_HTTP_READ_TIMEOUT="3", EMBEDQ_HTTP_MAX_CONNECTIONS="64")
    yield url
    stop(process)


def test_slow_and_silent_connections_are_closed_on_time_and_normal_requests_keep_answering(guarded):
    before = sorted(embed_over_http(guarded) for _ in range(5))[2]
    body = json.dumps({"model": MODEL, "input": "slow"}).encode()
    headers = f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n".encode()
    slow_body_head = headers + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    stopping = threading.Event()
    silent = [open_socket(guarded) for _ in range(20)]
    slow_headers = [open_socket(guarded) for _ in range(20)]
    slow_bodies = [open_socket(guarded) for _ in range(20)]
    for sock in slow_bodies:
        sock.sendall(slow_body_head)
    opened = time.monotonic()
    trickles = [
        threading.Thread(target=trickle, args=(sock, data, stopping), daemon=True)
        for socks, data in ((slow_headers, headers * 10), (slow_bodies, body))
        for sock in socks
    ]
    for thread in trickles:
        thread.start()
    try:
        during = sorted(embed_over_http(guarded) for _ in range(5))[2]
        assert during < before + 1.0  # answered in their normal time (the 60 sockets cost no worker time)
        for sock in silent + slow_headers + slow_bodies:
            sock.settimeout(max(0.1, opened + 6 - time.monotonic()))
            assert closed_by_server(sock)  # within the 3 s read timeout (and a margin for the test's own pace)
        assert 2.5 < time.monotonic() - opened < 6.5
    finally:
        stopping.set()
        for sock in silent + slow_headers + slow_bodies:
            sock.close()
    embed_over_http(guarded)


def test_past_the_connection_cap_new_connections_get_503_at_once_and_room_frees_as_they_close(guarded):
    held = [open_socket(guarded) for _ in range(64)]
    try:
        time.sleep(0.2)
        extra = open_socket(guarded)
        extra.settimeout(2)
        answer = extra.recv(65536)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503")
        error = json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["code"] == "too_many_connections" and error["type"] == "server_error"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    embed_over_http(guarded)


@pytest.fixture(scope="module")
def two_keys(service: LocalService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    files_dir = tmp_path_factory.mktemp("front-door-files")
    process, url = start_gateway(
        service.settings,
        EMBEDQ_API_KEYS=f"{KEY},{MINE},{OTHER_KEY}",
        EMBEDQ_FILES_DIR=str(files_dir),
        EMBEDQ_FILES_QUOTA_BYTES="10000",
    )
    yield url, files_dir
    stop(process)


def batch_lines(count: int, encoding: str = "float") -> bytes:
    body = {"model": MODEL, "encoding_format": encoding}
    return jsonl([request_line(f"line-{n}", {**body, "input": f"text number {n}"}) for n in range(count)])


def test_batch_metadata_is_capped_as_openai_caps_it(two_keys):
    url, _ = two_keys
    client = sdk(url, MINE)
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(batch_lines(2))), purpose="batch")
    try:

        def create(metadata: dict[str, str]) -> openai.types.Batch:
            return client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h", metadata=metadata
            )

        at_limits = create({f"{n:02d}" + "k" * 62: "v" * 512 for n in range(16)})
        assert len(at_limits.metadata) == 16
        for refused in (
            {"k" * 65: "v"},
            {"k": "v" * 513},
            {f"key{n}": "v" for n in range(17)},
        ):
            with pytest.raises(openai.BadRequestError) as error:
                create(refused)
            assert error.value.body["param"] == "metadata"  # type: ignore[index]
            assert len(error.value.message) < 300  # the value is named, not echoed whole
        done = wait_for(client, at_limits.id, timeout=60)
        client.files.delete(done.output_file_id)  # outputs count against the key's quota too
    finally:
        client.files.delete(uploaded.id)


def test_a_file_name_of_255_bytes_is_kept_and_256_is_refused(two_keys):
    client = sdk(two_keys[0], MINE)
    kept = client.files.create(file=("é" * 127 + "x", io.BytesIO(batch_lines(1))), purpose="batch")
    assert len(kept.filename.encode()) == 255
    client.files.delete(kept.id)
    with pytest.raises(openai.BadRequestError) as error:
        client.files.create(file=("n" * 256, io.BytesIO(batch_lines(1))), purpose="batch")
    assert error.value.body["param"] == "file"  # type: ignore[index]


def test_one_key_filling_its_quota_gets_429_and_the_other_key_is_untouched(two_keys):
    url, _ = two_keys
    mine, other = sdk(url, MINE), sdk(url, OTHER_KEY)
    first = mine.files.create(file=("a.jsonl", io.BytesIO(b"x" * 6000)), purpose="batch")
    second = mine.files.create(file=("b.jsonl", io.BytesIO(b"x" * 4000)), purpose="batch")  # exactly the quota
    with pytest.raises(openai.RateLimitError) as refused:
        mine.files.create(file=("c.jsonl", io.BytesIO(b"x")), purpose="batch")
    assert refused.value.body["code"] == "storage_quota_exceeded"  # type: ignore[index]
    others = other.files.create(file=("d.jsonl", io.BytesIO(b"x" * 9000)), purpose="batch")
    mine.files.delete(first.id)
    third = mine.files.create(file=("c.jsonl", io.BytesIO(b"x" * 6000)), purpose="batch")  # room again
    for client, file_id in ((mine, second.id), (mine, third.id), (other, others.id)):
        client.files.delete(file_id)


def batch_metrics(url: str) -> dict[tuple[str, str], float]:
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    return {
        (sample.name, next(iter(sample.labels.values()), "")): sample.value
        for family in families
        if family.name.startswith("embedq_batch")
        for sample in family.samples
    }


def test_deleting_a_running_batchs_input_is_409_and_allowed_once_it_ends_and_metrics_count_it(two_keys):
    url, _ = two_keys
    client = sdk(url, MINE)
    before = batch_metrics(url)
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(batch_lines(20))), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.ConflictError) as refused:
        client.files.delete(uploaded.id)
    assert refused.value.body["code"] == "file_in_use"  # type: ignore[index]
    done = wait_for(client, batch.id, timeout=60)
    assert done.status == "completed" and done.request_counts.completed == 20
    assert client.files.delete(uploaded.id).deleted
    client.files.delete(done.output_file_id)
    after = batch_metrics(url)
    grew = {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key, 0.0)}
    assert grew == {("embedq_batches_ended_total", "completed"): 1, ("embedq_batch_lines_total", "completed"): 20}
    assert after[("embedq_batches", "in_progress")] == after[("embedq_batches", "validating")] == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MB tmpfs for the files directory (the tests run as root, as CI does)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_refuses_an_upload_with_507_and_fails_a_batch_keeping_every_finished_line(
    service: LocalService, small_disk: Path
):
    process, url = start_gateway(service.settings, EMBEDQ_FILES_DIR=str(small_disk))
    try:
        client = sdk(url)
        with pytest.raises(openai.APIStatusError) as refused:
            client.files.create(file=("big.jsonl", io.BytesIO(b"x" * 2_000_000)), purpose="batch")
        assert refused.value.status_code == 507
        assert refused.value.body["code"] == "insufficient_storage"  # type: ignore[index]
        assert [path for path in small_disk.rglob("*") if path.is_file()] == []  # nothing left behind
        # 1,000 lines in 4 chunks of ~560 KB of base64 vectors each: two fit, the third does not
        uploaded = client.files.create(file=("in.jsonl", io.BytesIO(batch_lines(1000, "base64"))), purpose="batch")
        batch = wait_for(
            client,
            client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h").id,
            timeout=180,
        )
        assert batch.status == "failed" and batch.errors.data[0].code == "insufficient_storage"
        finished = client.files.content(batch.output_file_id).text.splitlines()
        assert 0 < batch.request_counts.completed == len(finished) < 1000
        assert len({json.loads(line)["custom_id"] for line in finished}) == len(finished)
        assert not list(small_disk.glob("batches/*/*"))  # no piece outlives the batch's end
        bulk = queue_key(lane_queue(service.settings.queue, "bulk"))
        assert service.client.connection.llen(bulk) == 0  # the chunks in flight when it failed: cancelled
    finally:
        stop(process)


def test_an_abandoned_request_frees_its_workers_within_a_micro_batch(service: LocalService, guarded):
    long_texts = [f"passage {n}: " + " ".join(f"word{(n * 7 + i) % 997}" for i in range(300)) for n in range(2048)]
    with pytest.raises(httpx.TimeoutException):  # the client gives up and closes its connection
        httpx.post(
            f"{guarded}/v1/embeddings",
            json={"model": MODEL, "input": long_texts},
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=2,
        )
    time.sleep(0.2)  # the gateway notices the disconnect and cancels the jobs, running ones too
    assert embed_over_http(guarded) < 1.5  # not behind the ~20 s of inference the abandoned request asked for
    # the worker says so at its next micro-batch boundary, which on a loaded machine may come after the answer above
    wait_until(lambda: "cancelled mid-pass" in service.output(), 10, "the running job dropped mid-pass")


def test_a_batch_that_fails_mid_run_keeps_its_finished_lines_and_leaves_no_job_queued(
    service: LocalService, tmp_path: Path
):
    process, url = start_gateway(service.settings, EMBEDQ_FILES_DIR=str(tmp_path))
    connection = service.client.connection
    bulk = queue_key(lane_queue(service.settings.queue, "bulk"))
    try:
        client = sdk(url)
        text = " ".join(f"word{i % 97}" for i in range(240))  # ~250 tokens: a chunk takes seconds
        data = jsonl([request_line(f"line-{n}", {"model": MODEL, "input": f"{n} {text}"}) for n in range(3000)])
        uploaded = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        connection.set("rq:suspended", 1)  # rq's own `rq suspend`: the window's jobs wait in the lane
        try:
            batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
            wait_until(lambda: connection.llen(bulk) >= 8, 60, "the batch's window in the lane")
            (tmp_path / "files" / uploaded.id).unlink()  # the input vanishes under it (an operator, a sweep)
        finally:
            connection.delete("rq:suspended")
        failed = wait_for(client, batch.id, timeout=120)
        assert connection.llen(bulk) == 0  # the chunks still waiting when it failed were cancelled
        assert failed.status == "failed" and failed.errors.data[0].code == "input_file_missing"
        finished = client.files.content(failed.output_file_id).text.splitlines()
        assert 0 < failed.request_counts.completed == len(finished) < 3000  # what finished is kept
    finally:
        stop(process)
