"""What callers bill by and what they may leave out: `usage` equals the tokens of every text of a
request however many jobs it was split into (over HTTP and in batch output lines), the limits on texts
per request hold at their exact boundary, the defaults of a request that names only `model` and `input`
are OpenAI's, and a driven batch's lease stays renewed. A gateway that splits requests into jobs of 4."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from embedq.broker.keys import BatchKeys
from embedq.gateway.batch.batches import LEASE_MS
from embedq.local.service import LocalService
from tests.conftest import KEY, MODEL, start_gateway, wait_until
from tests.test_batches import jsonl, request_line, sdk, stop, wait_for

TEXTS = [f"text {n}: " + " ".join(["word"] * (n * 3)) for n in range(10)]  # 10 texts of different lengths


@pytest.fixture(scope="module")
def split(service: LocalService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_gateway(
        service.settings,
        EMBEDQ_MAX_TEXTS_PER_JOB="4",
        EMBEDQ_HTTP_MAX_INPUTS="10",
        EMBEDQ_FILES_DIR=str(tmp_path_factory.mktemp("usage-files")),
    )
    yield url
    stop(process)


def tokens(encoder: Any, texts: list[str]) -> int:
    """What the model's tokenizer counts for `texts` (special tokens included), as the workers do."""
    return sum(len(encoding.ids) for encoding in encoder.tokenizer.encode_batch(texts))


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)


def test_usage_of_a_request_split_into_three_jobs_counts_every_texts_tokens(split, encoder):
    answer = post(split, {"model": MODEL, "input": TEXTS}).json()
    expected = tokens(encoder, TEXTS)
    assert answer["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    assert expected > tokens(encoder, TEXTS[:4])  # three jobs of 4, 4 and 2: the sum is over all of them


def test_http_max_inputs_accepts_exactly_its_number_of_texts_and_refuses_one_more(split):
    assert len(post(split, {"model": MODEL, "input": TEXTS}).json()["data"]) == 10
    refused = post(split, {"model": MODEL, "input": [*TEXTS, "one more"]})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "input"
    assert "at most 10 per request" in refused.json()["error"]["message"]


def test_a_request_naming_only_model_and_input_gets_float_vectors_of_the_full_dimension(split):
    answer = post(split, {"model": MODEL, "input": "a single string"}).json()
    assert len(answer["data"]) == 1
    embedding = answer["data"][0]["embedding"]
    assert isinstance(embedding, list) and len(embedding) == 384 and all(isinstance(x, float) for x in embedding)
    assert abs(sum(x * x for x in embedding) - 1.0) < 1e-4  # normalized, as OpenAI's are


def test_a_batch_line_split_into_jobs_reports_its_own_tokens_and_defaults_to_floats(split, encoder, service):
    client = sdk(split)
    texts = [f"in a batch: {text}" for text in TEXTS]  # not embedded before: no line comes from the cache
    lines = [
        request_line("ten", {"model": MODEL, "input": texts}),
        request_line("one", {"model": MODEL, "input": texts[3]}),
    ]
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(jsonl(lines))), purpose="batch")
    connection = service.client.connection
    connection.set("rq:suspended", 1)  # the workers wait: the batch is driven, its lease renewed, for a while
    try:
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
        lease = BatchKeys.of(cluster=False).lease(batch.id)
        wait_until(lambda: connection.pttl(lease) > 0, 30, "a gateway driving the batch")
        remaining = []
        for _ in range(20):  # 8 s: more than two renewals (every 3 s)
            remaining.append(connection.pttl(lease))
            time.sleep(0.4)
        assert min(remaining) > LEASE_MS - 4_000, remaining  # renewed: never run down towards expiry
    finally:
        connection.delete("rq:suspended")
    done = wait_for(client, batch.id, timeout=120)
    assert done.status == "completed", done
    by_id = {
        line["custom_id"]: line for line in map(json.loads, client.files.content(done.output_file_id).text.splitlines())
    }
    for custom_id, asked in (("ten", texts), ("one", [texts[3]])):
        body = by_id[custom_id]["response"]["body"]
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == tokens(encoder, asked)
        assert all(isinstance(item["embedding"], list) and len(item["embedding"]) == 384 for item in body["data"])
    client.files.delete(uploaded.id)
    client.files.delete(done.output_file_id)
