"""AsyncEmbedClient against real Redis and real workers: every method awaited, the same wire format
and errors as EmbedClient, and many coroutines sharing one client."""

import asyncio

import numpy as np
import pytest

from embedq import AsyncEmbedClient, EmbedClient, InvalidInput, JobFailed, JobNotFound, QueueFull, QueueUnavailable
from embedq.broker.jobs import EMBED_TASK
from embedq.local.redis_server import free_port
from tests.conftest import lanes
from tests.test_hostile_payloads import job_tuple, push_raw

TEXTS = ["an asyncio web app embeds this", "and this one too"]


def test_every_method_awaited_against_real_workers(service, encoder):
    async def run():
        async with AsyncEmbedClient(settings=service.settings) as client:
            job_id = await client.submit(TEXTS)
            result = await client.wait(job_id, timeout=30)
            assert await client.status(job_id) == "finished"
            assert (await client.result(job_id)).job_id == job_id
            ids = await client.submit_many([[text] for text in TEXTS])
            many = await client.wait_many(ids, timeout=30)
            vectors = await client.embed(TEXTS, timeout=30)
            arrays = await client.embed_many([TEXTS[:1], TEXTS], timeout=30)
            short = await client.embed(TEXTS, dimensions=32, timeout=30)
            stats = await client.stats()
            return result, many, vectors, arrays, short, stats

    result, many, vectors, arrays, short, stats = asyncio.run(run())
    expected = encoder.encode(TEXTS).vectors
    np.testing.assert_allclose(result.embeddings, expected, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([r.embeddings for r in many]), expected, atol=1e-5)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(arrays[1], expected, atol=1e-5)
    np.testing.assert_allclose(short, encoder.encode(TEXTS, dimensions=32).vectors, atol=1e-5)
    assert len(stats["workers"]) == 2 and stats["queue"] == service.settings.queue


def test_jobs_submitted_by_one_client_are_read_by_the_other(service):
    sync = service.client

    async def run():
        async with AsyncEmbedClient(settings=service.settings) as client:
            from_async = await client.submit(["submitted by asyncio"])
            from_sync = sync.submit(["submitted by threads"])
            return from_async, (await client.wait(from_sync, timeout=30)).embeddings

    from_async, vectors = asyncio.run(run())
    assert sync.wait(from_async, timeout=30).embeddings.shape == vectors.shape == (1, 384)


def test_64_coroutines_share_one_client(service, encoder):
    texts = [f"concurrent query number {i}" for i in range(64)]

    async def run():
        async with AsyncEmbedClient(settings=service.settings) as client:
            return await asyncio.gather(*(client.embed([text], timeout=60) for text in texts))

    results = asyncio.run(run())
    np.testing.assert_allclose(np.concatenate(results), encoder.encode(texts).vectors, atol=1e-5)


def test_the_same_named_errors(service):
    bad = push_raw(service, job_tuple(EMBED_TASK, {"v": 1, "texts": [5]}))
    full = EmbedClient(settings=service.settings.model_copy(update={"queue": "aio-full", "max_queue_length": 1}))
    lanes(full)["interactive"].empty()
    full.submit(["takes the only place"])

    async def run():
        async with AsyncEmbedClient(settings=service.settings) as client:
            with pytest.raises(InvalidInput, match="texts must not be empty"):
                await client.submit([])
            with pytest.raises(JobFailed, match=r"texts\[0\] must be a str"):
                await client.wait(bad, timeout=30)
            with pytest.raises(JobNotFound):
                await client.wait("no-such-job", timeout=30)
        async with AsyncEmbedClient(settings=full.settings) as client:
            with pytest.raises(QueueFull, match="MAX_QUEUE_LENGTH=1"):
                await client.submit(["no room"])
        down = service.settings.model_copy(update={"redis_url": f"redis://:pw-x@127.0.0.1:{free_port()}/0"})
        async with AsyncEmbedClient(settings=down) as client:
            with pytest.raises(QueueUnavailable, match=r"\*\*\*") as error:
                await client.submit(["Redis is away"])
            assert "pw-x" not in str(error.value)

    asyncio.run(run())
    lanes(full)["interactive"].empty()
