"""A queue split into shards (QUEUE_SHARDS) on one standalone Redis, real workers and the real model:
calls spread over the shards, each call's jobs on one, every job finished with its vectors; a shard that
is no worker's home is served too; a worker killed mid-pass in a shard not its home has its jobs handed
back; the cache answers on every shard; stats, the gateway (the openai SDK), its /metrics and status page
add the shards up."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import httpx
import numpy as np
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from embedq.broker.cache import CACHE_WORKER
from embedq.broker.jobs import EmbedRequest
from embedq.broker.shards import hash_tag, shard_queues
from embedq.local.service import LocalService
from embedq.producer.enqueue import pick_shard
from tests.conftest import KEY, MODEL, kill_a_worker_in_a_pass, make_settings, start_gateway

SHARDS = 3


@pytest.fixture(scope="module")
def sharded(redis_url, model_dir, tmp_path_factory):
    settings = make_settings(redis_url, model_dir, queue_shards=SHARDS)
    with LocalService(settings, workers=2, log_path=tmp_path_factory.mktemp("sharded") / "log") as running:
        yield running
        assert running.stop() == 0, running.output()


def texts(count: int, what: str) -> list[list[str]]:
    return [[f"{what} number {n}, {uuid.uuid4().hex}", f"and its second line {n}"] for n in range(count)]


def test_calls_spread_over_the_shards_and_every_job_finishes_with_its_vectors(sharded, encoder):
    client = sharded.client
    names = shard_queues(client.settings.queue, SHARDS)
    batches = texts(60, "a sentence for a sharded queue")
    ids = [client.submit(batch) for batch in batches]
    tags = Counter(hash_tag(job_id) for job_id in ids)
    assert set(tags) == {hash_tag(name) for name in names}, "every shard got calls"
    assert min(tags.values()) >= 8, f"calls spread evenly by their first text: {tags}"
    results = client.wait_many(ids, timeout=120)
    expected = encoder.encode(batches[0]).vectors
    assert np.allclose(results[0].embeddings, expected, atol=1e-5)
    assert all(result.embeddings.shape == (2, 384) for result in results)
    # one call's jobs stay on one shard: submit_many is one script, all or nothing
    many = client.submit_many(texts(5, "one call, five jobs"))
    assert len({hash_tag(job_id) for job_id in many}) == 1
    client.wait_many(many, timeout=60)


def test_stats_add_the_shards_up_and_show_each(sharded):
    client = sharded.client
    stats = client.stats()
    assert set(stats["shards"]) == set(shard_queues(client.settings.queue, SHARDS))
    assert stats["counters"]["jobs"] >= 65 and stats["queued"] == 0
    assert len(stats["workers"]) == 2


def test_a_worker_killed_in_a_pass_of_another_shard_has_its_jobs_handed_back(sharded):
    """2 workers, 3 shards: the third shard is no one's home, so its jobs run in passes taken from
    elsewhere; kill the worker running one and its jobs finish anyway (held per shard)."""
    client = sharded.client
    homeless = shard_queues(client.settings.queue, SHARDS)[2]
    batch = [f"a long text to be killed in {uuid.uuid4().hex}: " + "word " * 200 for _ in range(64)]
    ids, tries = [], 0
    while len(ids) < 6 and tries < 400:  # calls go to a shard by their first text: find ones for the third
        tries += 1
        job_id = client.submit([f"{tries} {batch[0]}", *batch[1:]], priority="bulk")
        if hash_tag(job_id) == hash_tag(homeless):
            ids.append(job_id)
    assert len(ids) == 6
    kill_a_worker_in_a_pass(sharded, client.connection, [homeless])
    started = time.monotonic()
    results = client.wait_many(ids, timeout=180)
    assert all(result.embeddings.shape == (64, 384) for result in results)
    assert time.monotonic() - started < 60, "handed back at once, not after rq's started-registry expiry"


def test_the_cache_answers_on_every_shard_and_the_gateway_serves_and_counts_the_shards(sharded):
    client = sharded.client
    batches = texts(30, "asked twice on a sharded queue")
    ids = [client.submit(batch) for batch in batches]
    filled = client.wait_many(ids, timeout=120)
    again = client.wait_many([client.submit(batch) for batch in batches], timeout=60)
    assert all(result.worker == CACHE_WORKER for result in again), "each shard's cache found its texts"
    assert all(a.embeddings.tobytes() == b.embeddings.tobytes() for a, b in zip(again, filled))
    gateway, url = start_gateway(sharded.settings)
    try:
        openai = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = openai.embeddings.create(model=MODEL, input=[f"over HTTP, {uuid.uuid4().hex}", "two"])
        assert len(answer.data) == 2 and len(answer.data[0].embedding) == 384
        metrics = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text)
        queue = client.settings.queue
        jobs = sum(
            sample.value
            for family in metrics
            for sample in family.samples
            if sample.name == "embedq_jobs_total" and sample.labels["queue"] == queue
        )
        assert jobs == client.stats()["counters"]["jobs"] > 30, "/metrics adds every shard's counters up"
        status = httpx.get(f"{url}/status.json", timeout=10).json()
        (shown,) = [entry for entry in status["queues"] if entry["queue"] == queue]
        assert shown["done"]["jobs"] > 30 and shown["cache"]["hits"] >= 60
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)


def test_a_text_for_the_shard_that_is_nobodys_home_is_answered_at_once_on_an_idle_fleet(sharded):
    """Idle workers also wait on the other shards' doorbells: a call to a shard with no home worker wakes
    one at once instead of waiting out its doorbell wait (1 s)."""
    client = sharded.client
    names = shard_queues(client.settings.queue, SHARDS)
    candidates = (f"a short query {n} {uuid.uuid4().hex}" for n in range(10_000))
    homeless = [text for text in candidates if pick_shard(names, [EmbedRequest([text])]) == names[2]][:5]
    timings = []
    for text in homeless:
        time.sleep(1.5)  # idle again: both workers back in their doorbell wait
        started = time.monotonic()
        client.embed([text], cache=False)
        timings.append(time.monotonic() - started)
    assert sorted(timings)[2] < 0.25, f"answered in {timings} s"


def test_a_backlog_on_the_shard_that_is_nobodys_home_is_drained_pass_after_pass(sharded):
    """Work left behind in a shard rings its doorbell again, so the other shards' idle workers take pass
    after pass from it instead of one per doorbell wait (1 s) each."""
    client = sharded.client
    names = shard_queues(client.settings.queue, SHARDS)
    tag = uuid.uuid4().hex
    first = next(
        text
        for text in (f"a backlog {n} {tag}" for n in range(10_000))
        if pick_shard(names, [EmbedRequest([text])]) == names[2]
    )
    per_pass = client.settings.coalesce_texts - 50  # one job a pass
    jobs = [[first] + [f"word {n} {job}" for n in range(per_pass - 1)] for job in range(12)]
    time.sleep(1.5)  # both workers idle at home
    started = time.monotonic()
    ids = client.submit_many(jobs)
    assert {hash_tag(job_id) for job_id in ids} == {hash_tag(names[2])}
    client.wait_many(ids, timeout=60)
    took = time.monotonic() - started
    assert took < 3.5, f"12 passes of the homeless shard took {took:.1f} s"
