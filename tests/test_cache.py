"""The fleet-wide cache, through real Redis, real workers and the real model: an answer from an entry is
bitwise the answer that filled it, for every option that only reshapes a vector; a partly cached job
runs only its other texts; a job answered from the cache is finished for every reader, with no worker
at all; entries carry the model's identity; bypass, scope, purge and metrics."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx
import numpy as np
import pytest
from openai import OpenAI
from redis import Redis
from rq.job import Job

from embedq import EmbedClient
from embedq.broker.cache import CACHE_WORKER, CacheUse, pack_entry, text_hashes
from embedq.broker.jobs import MsgpackSerializer
from embedq.broker.keys import cache_prefix
from embedq.broker.rq_private.records import finished_registry_key, queue_key
from embedq.broker.vectors import shape
from embedq.config import Settings
from embedq.gateway.batch.api import owner_of
from embedq.producer.stats import cache_stats
from embedq.worker.model_claim import claim_queue
from embedq.worker.supervisor.spawn import embedq_command, settings_env
from tests.conftest import KEY, MODEL, counter, make_settings, served_alone, start_gateway, wait_until


def unique(count: int, what: str = "text") -> list[str]:
    """Texts no earlier test (or run: the queue is new anyway) embedded."""
    return [f"a {what} never seen before, number {n}: {uuid.uuid4().hex}" for n in range(count)]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def numbers(client: EmbedClient) -> dict[str, float]:
    return cache_stats(client.connection, client.settings.queue)


@pytest.mark.parametrize("dimensions", [None, 32, 384])
@pytest.mark.parametrize("normalize", [True, False])
def test_an_answer_from_the_cache_is_bitwise_the_answer_that_filled_it(service, dimensions, normalize):
    client = service.client
    texts = unique(3)
    filled = client.wait(client.submit(texts, dimensions=dimensions, normalize=normalize))
    again = client.wait(client.submit(texts, dimensions=dimensions, normalize=normalize))
    assert filled.worker != CACHE_WORKER and "cached" not in filled.usage
    assert again.worker == CACHE_WORKER and again.usage["cached"] == 3
    assert again.embeddings.dtype == np.float32 and again.embeddings.shape == filled.embeddings.shape
    assert again.embeddings.tobytes() == filled.embeddings.tobytes()
    assert (again.usage["tokens"], again.text_tokens, again.dim) == (
        filled.usage["tokens"],
        filled.text_tokens,
        filled.dim,
    )
    # other options from the same entries: what a fresh computation gives them (to the last bits)
    other = client.wait(client.submit(texts, dimensions=16, normalize=not normalize))
    fresh = client.wait(client.submit(texts, dimensions=16, normalize=not normalize, cache=False))
    assert other.worker == CACHE_WORKER and fresh.worker != CACHE_WORKER
    assert cosine(other.embeddings, fresh.embeddings).min() >= 0.99999
    assert np.allclose(np.linalg.norm(other.embeddings, axis=1), np.linalg.norm(fresh.embeddings, axis=1), rtol=1e-5)


def test_a_partly_cached_job_runs_only_its_other_texts_and_answers_in_input_order(service):
    client = service.client
    known, new = unique(2, "known text"), unique(2, "new text")
    filled = client.wait(client.submit(known))
    before, ran = numbers(client), counter(client, "texts")
    texts = [new[0], known[1], new[1], known[0], known[1]]
    mixed = client.wait(client.submit(texts))
    after = numbers(client)
    assert counter(client, "texts") - ran == 2, "the model ran the two new texts alone"
    assert mixed.worker != CACHE_WORKER and mixed.usage["cached"] == 3 and mixed.usage["texts"] == 5
    for row, filling_row in ((1, 1), (3, 0), (4, 1)):
        assert mixed.embeddings[row].tobytes() == filled.embeddings[filling_row].tobytes()
    fresh = client.embed(texts, cache=False)
    assert cosine(mixed.embeddings, fresh).min() >= 0.99999
    assert [mixed.text_tokens[row] for row in (1, 3, 4)] == [filled.text_tokens[row] for row in (1, 0, 1)]
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (3, 2)
    assert after["writes"] - before["writes"] == 2, "only the two new texts were computed and stored"
    assert client.wait(client.submit(new)).worker == CACHE_WORKER


def test_a_job_answered_from_the_cache_is_finished_for_every_reader(service):
    client = service.client
    texts = unique(2)
    client.embed(texts)
    job_id = client.submit(texts)  # the submit's own round trip answered it
    assert client.status(job_id) == "finished"
    result = client.result(job_id)
    assert result is not None and result.worker == CACHE_WORKER and result.embeddings.shape == (2, 384)
    assert client.wait(job_id).embeddings.tobytes() == result.embeddings.tobytes()
    job = Job.fetch(job_id, connection=client.connection, serializer=MsgpackSerializer)
    assert job.get_status() == "finished"
    assert job.return_value() == {"texts": 2, "dim": 384, "tokens": sum(result.text_tokens), "cached": 2}
    assert client.connection.zscore(finished_registry_key(client.settings.queue), job_id) is not None
    assert job_id.encode() not in client.connection.lrange(queue_key(client.settings.queue), 0, -1)


def test_identical_texts_in_one_pass_are_computed_once(encoder):
    runs: list[int] = []

    class Counting:
        def __init__(self, session):
            self.session = session

        def run(self, names, feed):
            runs.append(len(feed["input_ids"]))
            return self.session.run(names, feed)

    from embedq.broker.jobs import EmbedRequest

    real, encoder.session = encoder.session, Counting(encoder.session)
    try:
        one, two = encoder.encode_many([EmbedRequest(["same", "other", "same"]), EmbedRequest(["other", "third"])])
    finally:
        encoder.session = real
    assert sum(runs) == 3, "same, other, third"
    assert one.vectors[0].tobytes() == one.vectors[2].tobytes() and one.vectors[1].tobytes() == two.vectors[0].tobytes()
    assert one.text_tokens[0] == one.text_tokens[2] and one.tokens == sum(one.text_tokens)


def plant(redis: Redis, queue: str, texts: list[str], vectors: np.ndarray, scope: str = "") -> None:
    """Entries as workers of a model with fingerprint 'f' * 16 would have written them."""
    for hashed, vector in zip(text_hashes(texts, CacheUse(scope=scope), None, None), vectors):
        redis.set(cache_prefix(queue) + "f" * 16 + ":" + hashed, pack_entry(vector, 5, False), ex=600)


def test_cached_jobs_are_answered_with_no_worker_running_by_the_client_and_the_gateway(redis_url, model_dir):
    settings = make_settings(redis_url, model_dir)
    queue, model = settings.queue, f"planted-{uuid.uuid4().hex[:6]}"
    redis = Redis.from_url(redis_url)
    claim_queue(redis, queue, model, 4, ttl=1, fingerprint="f" * 16)  # lapses at once: no live worker
    texts, vectors = unique(3), np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    plant(redis, queue, texts, vectors)
    redis.set(cache_prefix(queue) + "f" * 16 + ":" + text_hashes(["foreign"], CacheUse(), None, None)[0], b"junk")
    with EmbedClient(settings=settings) as client:
        got = client.embed(texts, timeout=2)
        assert got.tobytes() == shape(vectors, None, True).tobytes()
        assert client.embed(texts[:1], dimensions=2, normalize=False, timeout=2).tolist() == [[1.0, 2.0]]
        waiting = client.submit(["foreign"])
        assert client.status(waiting) == "queued", "a foreign entry is a miss"
        assert numbers(client)["foreign"] == 1 and not redis.exists(
            cache_prefix(queue) + "f" * 16 + ":" + text_hashes(["foreign"], CacheUse(), None, None)[0]
        )
    plant(redis, queue, texts, vectors, scope=owner_of(KEY.encode()))  # the gateway's callers: their key's scope
    time.sleep(1.1)
    process, url = start_gateway(settings)
    try:
        headers = {"Authorization": f"Bearer {KEY}"}
        answer = httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": texts[1:]}, headers=headers)
        assert answer.status_code == 200, answer.text
        served = np.array([item["embedding"] for item in answer.json()["data"]], dtype=np.float32)
        assert served.tobytes() == shape(vectors[1:], None, True).tobytes()
        # no live worker and the input not all cached: the 503 that says so, nothing enqueued
        queued = redis.llen(queue_key(queue))
        refused = httpx.post(f"{url}/v1/embeddings", json={"model": model, "input": [texts[0], "new"]}, headers=headers)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_live_workers"
        assert refused.headers["Retry-After"] and redis.llen(queue_key(queue)) == queued
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_cache_control_and_cache_false_bypass_it(service, gateway):
    client = service.client
    texts = unique(1)
    client.embed(texts, cache=False)  # neither read nor written
    assert client.wait(client.submit(texts)).worker != CACHE_WORKER
    sdk = OpenAI(base_url=f"{gateway}/v1", api_key=KEY)
    stored, unread = unique(1), numbers(client)
    sdk.embeddings.create(model=MODEL, input=stored, extra_headers={"Cache-Control": "no-store"})
    after = numbers(client)
    assert after["writes"] == unread["writes"] and after["misses"] == unread["misses"] + 1
    assert client.wait(client.submit(stored)).worker != CACHE_WORKER, "no-store wrote nothing"
    before = numbers(client)
    sdk.embeddings.create(model=MODEL, input=stored, extra_headers={"Cache-Control": "no-cache"})
    assert numbers(client)["hits"] == before["hits"], "no-cache read nothing"
    sdk.embeddings.create(model=MODEL, input=stored)
    assert numbers(client)["hits"] == before["hits"] + 1


@pytest.mark.parametrize("scope", ["key", "shared"])
def test_api_keys_share_no_cache_unless_told(service, scope):
    process, url = start_gateway(service.settings, EMBEDQ_API_KEYS="first-key,second-key", EMBEDQ_CACHE_SCOPE=scope)
    try:
        text = unique(1)[0]

        def ask(key: str) -> None:
            answer = httpx.post(
                f"{url}/v1/embeddings", json={"model": MODEL, "input": text}, headers={"Authorization": f"Bearer {key}"}
            )
            assert answer.status_code == 200, answer.text

        ask("first-key")
        before = numbers(service.client)
        ask("second-key")
        hits = numbers(service.client)["hits"] - before["hits"]
        assert hits == (0 if scope == "key" else 1)
        ask("first-key")
        assert numbers(service.client)["hits"] - before["hits"] == hits + 1
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_clear_empties_the_cache_and_stats_and_metrics_show_it(service, gateway):
    client = service.client
    texts = unique(4)
    client.embed(texts)
    client.embed(texts)
    shown = numbers(client)
    assert shown["entries"] >= 4 and shown["bytes"] > 0 and 0 < shown["hit_ratio"] < 1 and shown["answered"] >= 1
    assert client.stats()["cache"]["hits"] == shown["hits"]
    metrics = httpx.get(f"{gateway}/metrics").text
    assert f'embedq_cache_hits_total{{queue="{client.settings.queue}"}} {shown["hits"]}' in metrics
    assert f'embedq_cache_entries{{queue="{client.settings.queue}"}}' in metrics
    cleared = subprocess.run(
        [*embedq_command(), "cache", "clear", "--queue", client.settings.queue],
        env=settings_env(service.settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cleared.returncode == 0 and f"removed {int(shown['entries'])} cached vectors" in cleared.stdout
    assert numbers(client)["entries"] == 0 and client.wait(client.submit(texts)).worker != CACHE_WORKER


def test_entries_carry_the_models_identity(redis_url, model_dir, tmp_path):
    """Two models on one queue name, one after the other (the claim of the first lapsed): neither is ever
    answered from the other's entries, and each finds its own again. (An int8 copy beside its fp32 model:
    test_int8.)"""
    other_dir = tmp_path / "all-MiniLM-L6-v2-short"
    subprocess.run(["cp", "-r", str(model_dir), str(other_dir)], check=True)
    base = make_settings(redis_url, model_dir)
    texts = unique(3)
    first = served_alone(base, texts)
    assert first.worker != CACHE_WORKER
    short = served_alone(Settings(**{**base.model_dump(), "model_dir": other_dir, "max_length": 8}), texts)
    assert short.worker != CACHE_WORKER, "another setting that changes the vectors is another identity"
    assert short.embeddings.tobytes() != first.embeddings.tobytes()
    again = served_alone(base, texts)
    assert again.worker == CACHE_WORKER and again.embeddings.tobytes() == first.embeddings.tobytes()


def test_the_cache_keeps_its_budget_and_never_costs_a_submit_on_a_small_noeviction_redis(model_dir, tmp_path):
    from embedq.local.redis_server import RedisServer
    from embedq.local.service import LocalService

    server = RedisServer(None, "--maxmemory", "24mb", "--maxmemory-policy", "noeviction").start()
    admin = Redis.from_url(server.url)
    try:
        settings = make_settings(server.url, model_dir, result_ttl=60)
        with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
            client = service.client
            texts = [f"unique line {n} of the budget test, {uuid.uuid4().hex}" for n in range(6000)]
            for start in range(0, len(texts), 600):
                ids = client.submit_many([texts[at : at + 50] for at in range(start, start + 600, 50)])
                client.wait_many(ids, timeout=120)  # every submit accepted: none refused for the cache
            shown = numbers(client)
            budget = 24 * 1024 * 1024 // 4
            assert shown["budget"] == budget and shown["trimmed"] > 0
            assert shown["bytes"] <= budget, "trimmed back within the budget after every pass"
            held = admin.info("memory")["used_memory"]
            removed = subprocess.run(
                [*embedq_command(), "cache", "clear"], env=settings_env(settings), capture_output=True, text=True
            )
            assert removed.returncode == 0
            wait_until(lambda: admin.info("memory")["used_memory"] < held, 10, "memory freed")
            real = held - admin.info("memory")["used_memory"]
            assert real <= budget * 1.1, f"the cache took {real} bytes of Redis for a budget of {budget}"
            assert shown["entries"] * 1000 <= real, "the accounting counts what the entries hold"
            assert service.stop() == 0
    finally:
        server.cleanup()


def test_a_cache_redis_of_its_own_answers_hits_and_one_that_is_down_costs_only_misses(redis_url, model_dir, tmp_path):
    from embedq.local.redis_server import RedisServer
    from embedq.local.service import LocalService

    cache_server = RedisServer(None, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru").start()
    back = RedisServer(cache_server.port, "--maxmemory-policy", "allkeys-lru")
    cache_redis = Redis.from_url(cache_server.url)
    settings = make_settings(redis_url, model_dir, cache_url=cache_server.url)
    try:
        with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
            client, texts = service.client, unique(4)
            first = client.wait(client.submit(texts))  # its reply tells the client the model's fingerprint
            wait_until(lambda: cache_redis.dbsize() >= 4, 10, "the pass's entries stored in the cache's Redis")
            assert not client.connection.keys(cache_prefix(settings.queue) + "*"), "none in the queue's Redis"
            again = client.wait(client.submit(texts))
            assert again.worker == CACHE_WORKER and again.embeddings.tobytes() == first.embeddings.tobytes()
            assert client.stats()["cache"]["entries"] >= 4

            cache_server.stop()  # down mid-run: every job still finishes, computed
            batches = [unique(2) for _ in range(10)] + [texts]
            results = client.wait_many(client.submit_many(batches), timeout=60)
            assert [len(result.embeddings) for result in results] == [2] * 10 + [4]
            assert results[-1].worker != CACHE_WORKER
            # the entries are written after the results, so the refusal is logged just after the last reply
            wait_until(lambda: "(CACHE_URL) refused" in service.output(), 10, "the refused entries logged")

            back.start()  # back, empty
            time.sleep(5.5)  # past the rest a client's look-ups take after an outage
            fresh = unique(2)
            client.embed(fresh)
            wait_until(lambda: cache_redis.dbsize() >= 2, 10, "entries stored again")
            assert client.wait(client.submit(fresh)).worker == CACHE_WORKER
            assert service.stop() == 0
    finally:
        cache_server.cleanup()
        back.cleanup()
