"""`embedq serve` in front of real workers, driven by the official openai SDK and plain HTTP: OpenAI's
request and response shapes, its error bodies, keys, requests split into jobs, concurrency, /metrics."""

import base64
import os
import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from openai import APIStatusError, AuthenticationError, BadRequestError, NotFoundError, OpenAI
from prometheus_client.parser import text_string_to_metric_families

from embedq.broker.keys import QUEUES_KEY, model_key, serving_key
from embedq.worker.model_claim import claim_queue
from tests.conftest import KEY, MODEL, free_port, start_gateway, wait_until


@pytest.fixture(scope="module")
def openai_client(gateway):
    return OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)


def cosines(a, b):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


TEXTS = ["A man is playing a guitar.", "The cat sleeps on the warm windowsill.", "Stocks fell sharply on Monday."]


def test_the_openai_sdk_default_base64_gives_the_python_clients_vectors(openai_client, service):
    answer = openai_client.embeddings.create(model=MODEL, input=TEXTS)  # the SDK asks for base64 by default
    assert answer.model == MODEL and [item.index for item in answer.data] == [0, 1, 2]
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(TEXTS)
    expected = service.client.embed(TEXTS)
    assert cosines([item.embedding for item in answer.data], expected).min() >= 0.9999


def test_float_encoding_a_single_string_and_dimensions(gateway, openai_client, service):
    single = openai_client.embeddings.create(model=MODEL, input=TEXTS[0], encoding_format="float")
    assert len(single.data) == 1 and len(single.data[0].embedding) == 384
    # floats are written in their shortest float32 form: read back as float32 they are the worker's values
    np.testing.assert_allclose(
        np.asarray(single.data[0].embedding, dtype=np.float32), service.client.embed([TEXTS[0]])[0], atol=1e-6
    )
    short = openai_client.embeddings.create(model=MODEL, input=TEXTS, dimensions=128)
    vectors = np.array([item.embedding for item in short.data])
    assert vectors.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    raw = httpx.post(
        f"{gateway}/v1/embeddings",
        json={"model": MODEL, "input": TEXTS, "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {KEY}"},
    ).json()
    decoded = [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in raw["data"]]
    assert cosines(decoded, service.client.embed(TEXTS)).min() >= 0.9999


def test_an_alias_reaches_the_served_model_and_models_lists_it(openai_client):
    answer = openai_client.embeddings.create(model=f"sentence-transformers/{MODEL}", input="alias")
    assert answer.model == MODEL
    assert MODEL in [model.id for model in openai_client.models.list()]


def test_a_request_larger_than_one_job_is_split_and_answered_in_order(openai_client, service):
    texts = [f"sentence number {i} about {['cats', 'stocks', 'rain'][i % 3]}" for i in range(600)]
    answer = openai_client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [item.index for item in answer.data] == list(range(600))
    expected = np.concatenate(service.client.embed_many([texts[i : i + 200] for i in range(0, 600, 200)]))
    assert cosines([item.embedding for item in answer.data], expected).min() >= 0.9999


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"model": MODEL, "input": []}, 400, "non-empty list"),
        ({"model": MODEL, "input": ["ok", ""]}, 400, "input[1] is an empty string"),
        ({"model": MODEL, "input": ["ok", 7.5]}, 400, "input[1] is float"),
        ({"model": MODEL, "input": [[101, 2023, 102]]}, 400, "check_embedding_ctx_length=False"),
        ({"model": MODEL, "input": "x", "dimensions": 0}, 400, "'dimensions' must be a positive integer"),
        ({"model": MODEL, "input": "x", "dimensions": 1000}, 400, "more than all-MiniLM-L6-v2's 384"),
        ({"model": MODEL, "input": "x", "encoding_format": "hex"}, 400, "'encoding_format' must be one of"),
        ({"model": "gpt-unknown", "input": "x"}, 404, "served: " + MODEL),
        ({"model": MODEL, "input": ["t"] * 2049}, 400, "at most 2048 per request"),
        ({"model": MODEL, "input": "x" * 300_000}, 413, "over 200000 bytes"),
    ],
)
def test_bad_requests_get_openai_error_bodies(gateway, body, status, fragment):
    answer = httpx.post(f"{gateway}/v1/embeddings", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert fragment in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_a_body_that_is_not_json_or_a_get_gets_an_openai_error(gateway):
    auth = {"Authorization": f"Bearer {KEY}"}
    json_type = {**auth, "Content-Type": "application/json"}
    broken = httpx.post(f"{gateway}/v1/embeddings", content=b'{"model": ', headers=json_type)
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    plain = httpx.post(f"{gateway}/v1/embeddings", content=b'{"model": "m", "input": "x"}', headers=auth)
    assert plain.status_code == 415 and plain.json()["error"]["code"] == "unsupported_media_type"
    wrong_method = httpx.get(f"{gateway}/v1/embeddings", headers=auth)
    assert wrong_method.status_code == 405 and "takes POST" in wrong_method.json()["error"]["message"]


def test_the_sdk_raises_its_own_errors(openai_client, gateway):
    with pytest.raises(BadRequestError, match="token ids"):
        openai_client.embeddings.create(model=MODEL, input=[[1, 2, 3]])
    with pytest.raises(NotFoundError, match="model_not_found|not served"):
        openai_client.embeddings.create(model="nope", input="x")
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{gateway}/v1", api_key="sk-wrong", max_retries=0).embeddings.create(model=MODEL, input="x")
    assert httpx.post(f"{gateway}/v1/embeddings", json={"model": MODEL, "input": "x"}).status_code == 401
    for open_path in ("/health", "/ready", "/metrics"):
        assert httpx.get(f"{gateway}{open_path}").status_code == 200


def test_a_model_whose_workers_are_gone_gets_503_with_retry_after(openai_client, redis):
    claim_queue(redis, "ghost-queue", "ghost-model", 384, ttl=1)
    time.sleep(1.1)  # its workers are gone: the claim lapsed, what they published stays
    try:
        time.sleep(2.1)  # the gateway re-reads its model directory every 2 s
        with pytest.raises(APIStatusError) as raised:
            openai_client.embeddings.create(model="ghost-model", input="x")
        assert raised.value.status_code == 503
        assert raised.value.response.headers["retry-after"]
    finally:
        redis.delete(model_key("ghost-queue"))
        redis.srem(QUEUES_KEY, "ghost-queue")


def test_sixteen_concurrent_clients_each_get_their_own_vectors_in_order(openai_client, service):
    requests = [
        [f"client {c} text {i}: {['apples', 'trains', 'music'][i % 3]}" for i in range(1 + c % 4)] for c in range(16)
    ]
    expected = [service.client.embed(texts) for texts in requests]
    answers: dict[int, list] = {}

    def ask(number: int) -> None:
        answer = openai_client.embeddings.create(model=MODEL, input=requests[number], encoding_format="float")
        answers[number] = [item.embedding for item in answer.data]

    threads = [threading.Thread(target=ask, args=(number,)) for number in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number in range(16):
        assert cosines(answers[number], expected[number]).min() >= 0.9999


def histograms(url: str) -> dict:
    families = {family.name: family for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}
    return families


def test_metrics_parse_and_two_replicas_report_the_same_fleet_numbers(gateway, openai_client, service):
    openai_client.embeddings.create(model=MODEL, input=TEXTS)
    second, second_url = start_gateway(service.settings)
    try:
        first_families, second_families = histograms(gateway), histograms(second_url)
    finally:
        second.terminate()
        second.wait(timeout=30)
    queue = service.settings.queue
    for name in (
        "embedq_total_seconds",
        "embedq_queue_seconds",
        "embedq_infer_seconds",
        "embedq_texts",
        "embedq_queue_depth",
    ):
        ours = sorted(
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for s in first_families[name].samples
            if s.labels.get("queue") == queue
        )
        theirs = sorted(
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for s in second_families[name].samples
            if s.labels.get("queue") == queue
        )
        assert ours and ours == theirs, name
    workers = [s for s in first_families["embedq_workers"].samples if s.labels["queue"] == queue]
    assert workers and workers[0].labels["model"] == MODEL and sum(s.value for s in workers) == 2
    finished = [
        s
        for s in first_families["embedq_total_seconds"].samples
        if s.name.endswith("_count") and s.labels["queue"] == queue
    ]
    assert sum(s.value for s in finished) >= 1
    requests = [s for s in first_families["embedq_gateway_requests"].samples if s.name.endswith("_total")]
    assert any(s.labels == {"route": "/v1/embeddings", "status": "200"} and s.value >= 1 for s in requests)
    assert os.environ.get("EMBEDQ_API_KEYS", "") not in httpx.get(f"{gateway}/metrics").text or not os.environ.get(
        "EMBEDQ_API_KEYS"
    )


LONG_TEXT = "embeddings turn text into vectors " * 120  # about 600 tokens, over the model's 256


def truncated_total(url: str, queue: str) -> float:
    family = histograms(url)["embedq_truncated"]
    return sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels["queue"] == queue)


def test_a_text_over_the_models_length_is_truncated_and_counted_or_refused_by_index(gateway, openai_client, service):
    before = truncated_total(gateway, service.settings.queue)
    answer = openai_client.embeddings.create(model=MODEL, input=["short", LONG_TEXT])
    assert len(answer.data) == 2 and answer.usage.prompt_tokens <= 256 + 10
    assert truncated_total(gateway, service.settings.queue) == before + 1
    strict, url = start_gateway(service.settings, EMBEDQ_HTTP_TRUNCATE="false", EMBEDQ_MAX_TEXTS_PER_JOB="2")
    try:
        texts = ["one", "two", "three", LONG_TEXT, "five"]  # jobs of 2: the long text is the second of job 2
        auth = {"Authorization": f"Bearer {KEY}"}
        refused = httpx.post(f"{url}/v1/embeddings", json={"model": MODEL, "input": texts}, headers=auth)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "input_too_long"
        assert "input[3] is longer than the model's maximum of 256 tokens" in refused.json()["error"]["message"]
        fine = httpx.post(f"{url}/v1/embeddings", json={"model": MODEL, "input": texts[:3]}, headers=auth)
        assert fine.status_code == 200 and len(fine.json()["data"]) == 3
    finally:
        strict.terminate()
        strict.wait(timeout=30)


def test_a_job_whose_client_went_away_is_cancelled_before_a_worker_takes_it(gateway, redis):
    from rq import Queue
    from rq.registry import CanceledJobRegistry

    queue = f"parked-{os.getpid()}"  # a live claim, but no worker takes its jobs
    claim_queue(redis, queue, "parked-model", 384, ttl=60)
    try:
        time.sleep(2.1)  # the gateway re-reads its model directory every 2 s
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{gateway}/v1/embeddings",
                json={"model": "parked-model", "input": ["nobody waits for this"]},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=1.0,
            )
        parked = Queue(queue, connection=redis)
        wait_until(lambda: CanceledJobRegistry(queue=parked).count == 1, 10, "the abandoned job is cancelled")
        assert parked.count == 0
        cancelled = histograms(gateway)["embedq_gateway_cancelled_jobs"].samples
        assert sum(s.value for s in cancelled if s.name.endswith("_total")) >= 1
    finally:
        redis.delete(model_key(queue), serving_key(queue))
        redis.srem(QUEUES_KEY, queue)


def test_langchain_openai_embeddings_get_the_same_vectors(gateway, service):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=MODEL,
        base_url=f"{gateway}/v1",
        api_key=KEY,
        check_embedding_ctx_length=False,  # else LangChain sends token ids (tiktoken's), which embedq refuses
        max_retries=0,
    )
    documents = embeddings.embed_documents(TEXTS)
    query = embeddings.embed_query("Who plays the guitar?")
    assert cosines(documents, service.client.embed(TEXTS)).min() >= 0.9999
    assert cosines([query], service.client.embed(["Who plays the guitar?"])).min() >= 0.9999


@pytest.fixture
def parked(redis):
    """A model whose queue has a live claim but no worker taking jobs: what a busy or stuck fleet looks like."""
    queue = f"parked-{uuid.uuid4().hex[:6]}"
    claim_queue(redis, queue, f"model-{queue}", 384, ttl=120)
    yield queue, f"model-{queue}"
    redis.delete(model_key(queue), serving_key(queue))
    redis.srem(QUEUES_KEY, queue)


def test_a_full_queue_gets_429_and_a_job_that_outlives_the_timeout_504(service, parked):
    queue, model = parked
    process, url = start_gateway(
        service.settings.model_copy(update={"max_queue_length": 1}), EMBEDQ_QUEUE=queue, EMBEDQ_HTTP_REQUEST_TIMEOUT="1"
    )
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        slow = httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": "waits"}, headers=auth, timeout=30)
        assert slow.status_code == 504, slow.text  # its job is still queued: the queue is now full
        assert slow.json()["error"]["code"] == "timeout"
        full = httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": "no room"}, headers=auth, timeout=30)
        assert full.status_code == 429, full.text
        assert full.headers["retry-after"] and full.json()["error"]["type"] == "rate_limit_error"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_redis_that_does_not_answer_gets_503_and_ready_says_so(service):
    settings = service.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    process, url = start_gateway(settings)
    try:
        assert httpx.get(f"{url}/health").status_code == 200  # alive: the process answers
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        answer = httpx.post(
            f"{url}/v1/embeddings", json={"model": MODEL, "input": "x"}, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert answer.json()["error"]["code"] == "queue_unavailable"
        assert "127.0.0.1" not in answer.text  # no Redis address (or password) in what clients see
    finally:
        process.terminate()
        process.wait(timeout=30)
