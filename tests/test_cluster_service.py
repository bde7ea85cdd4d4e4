"""embedq on a real Redis Cluster (3 primaries, REDIS_CLUSTER=true, 3 shards), real workers and the real
model: calls spread over every primary and every job finishes with the vectors a standalone Redis gives;
one wait reads jobs of every shard; stats add the shards up; the asyncio client and the cache work; a
worker SIGKILLed mid-pass has its jobs handed back; and no command anywhere is refused for CROSSSLOT."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections import Counter

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from embedq import AsyncEmbedClient
from embedq.broker.cache import CACHE_WORKER
from embedq.broker.shards import hash_tag, shard_queues
from embedq.local.redis_cluster import RedisCluster
from embedq.local.service import LocalService
from tests.conftest import kill_a_worker_in_a_pass, make_settings

SHARDS = 3


@pytest.fixture(scope="module")
def cluster():
    running = RedisCluster(3, 0).start()
    yield running
    running.cleanup()


@pytest.fixture(scope="module")
def service(cluster, model_dir, tmp_path_factory):
    settings = make_settings(cluster.url, model_dir, redis_cluster=True, queue_shards=SHARDS)
    with LocalService(settings, workers=2, log_path=tmp_path_factory.mktemp("cluster") / "log") as running:
        yield running
        assert running.stop() == 0, running.output()
        assert "CROSSSLOT" not in running.output() and "Traceback" not in running.output(), running.output()[-3000:]


def batches(count: int, what: str) -> list[list[str]]:
    return [[f"{what} number {n}, {uuid.uuid4().hex}", f"and its second line {n}"] for n in range(count)]


def test_calls_spread_over_every_primary_and_finish_with_their_vectors(cluster, service, encoder):
    client = service.client
    sent = batches(45, "a sentence on a cluster")
    ids = [client.submit(batch) for batch in sent]
    primaries = Counter(cluster.primary_of(f"rq:job:{job_id}") for job_id in ids)
    assert set(primaries) == set(cluster.primary_ports()), f"every primary holds jobs: {primaries}"
    results = client.wait_many(ids, timeout=120)  # jobs of three shards on three nodes in one wait
    assert [result.job_id for result in results] == ids
    expected = encoder.encode(sent[7]).vectors
    assert np.allclose(results[7].embeddings, expected, atol=1e-5)
    vectors = client.embed(["the same text on a cluster"])
    assert np.allclose(vectors, encoder.encode(["the same text on a cluster"]).vectors, atol=1e-5)
    stats = client.stats()
    assert set(stats["shards"]) == set(shard_queues(client.settings.queue, SHARDS, cluster=True))
    assert stats["counters"]["jobs"] >= 46 and stats["queued"] == 0 and len(stats["workers"]) == 2


def test_the_asyncio_client_and_the_cache_work_on_the_cluster(service):
    settings = service.client.settings

    async def run() -> tuple[np.ndarray, int, str]:
        client = AsyncEmbedClient(settings=settings)
        try:
            texts = [f"an async text {uuid.uuid4().hex}"]
            first = await client.embed(texts)
            ids = [await client.submit(batch) for batch in batches(9, "async")]
            waited = await client.wait_many(ids, timeout=60)
            again = await client.wait(await client.submit(texts))
            assert again.embeddings.tobytes() == first.tobytes()
            return first, len(waited), again.worker
        finally:
            await client.aclose()

    first, waited, worker = asyncio.run(run())
    assert first.shape == (1, 384) and waited == 9
    assert worker == CACHE_WORKER, "answered from the shard's cache"


def test_a_worker_killed_mid_pass_on_the_cluster_has_its_jobs_handed_back(service):
    client = service.client
    shards = shard_queues(client.settings.queue, SHARDS, cluster=True)
    long = [f"a long text to be killed on a cluster {uuid.uuid4().hex}: " + "word " * 200 for _ in range(64)]
    ids = [client.submit([f"{n} {long[0]}", *long[1:]], priority="bulk") for n in range(8)]
    kill_a_worker_in_a_pass(service, client.connection, shards)
    started = time.monotonic()
    results = client.wait_many(ids, timeout=180)
    assert all(result.embeddings.shape == (64, 384) for result in results)
    assert time.monotonic() - started < 90
    assert len({hash_tag(job_id) for job_id in ids}) >= 2


def test_the_gateway_serves_embeddings_and_metrics_on_the_cluster_and_refuses_the_batch_api_by_name(service):
    from tests.conftest import KEY, MODEL, start_gateway

    gateway, url = start_gateway(service.settings)
    try:
        api = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY)
        reply = api.embeddings.create(model=MODEL, input=[f"over http on a cluster {uuid.uuid4().hex}", "two"])
        assert [len(item.embedding) for item in reply.data] == [384, 384]
        metrics = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text)
        queue = service.settings.queue
        jobs = sum(
            sample.value
            for family in metrics
            for sample in family.samples
            if sample.name == "embedq_jobs_total" and sample.labels["queue"] == queue
        )
        assert jobs == service.client.stats()["counters"]["jobs"] > 30, "/metrics adds the shards on every primary up"
        with pytest.raises(openai.APIStatusError, match="Redis Cluster") as refused:
            api.files.create(file=("input.jsonl", io.BytesIO(b"{}")), purpose="batch")
        assert refused.value.status_code == 501, "the Batch API refuses by name on a Cluster (not built yet)"
        assert httpx.get(f"{url}/v1/batches", headers={"Authorization": f"Bearer {KEY}"}).status_code == 501
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
