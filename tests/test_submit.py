"""Submit as a fleet of web apps sees it, against real Redis: one round trip, all or nothing, and
MAX_QUEUE_LENGTH held exactly however many producers race for the last places."""

import threading
import uuid

import pytest
import redis
from rq.job import Job

from embedq import ClientSettings, EmbedClient, InvalidInput, QueueFull
from embedq.broker.jobs import EMBED_TASK, MsgpackSerializer
from embedq.broker.keys import model_key
from tests.conftest import lanes


def client_for(redis_url: str, **settings: object) -> EmbedClient:
    values = {"redis_url": redis_url, "queue": f"submit-{uuid.uuid4().hex[:8]}", **settings}
    return EmbedClient(settings=ClientSettings(**values))  # type: ignore[arg-type]


def test_a_submit_is_one_round_trip(redis_url):
    sends = []

    class Counting(redis.Connection):
        def send_packed_command(self, command, check_health=True):
            sends.append(command)
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(redis_url, connection_class=Counting)
    client = EmbedClient(
        settings=ClientSettings(redis_url=redis_url, queue=f"submit-{uuid.uuid4().hex[:8]}"),
        connection=redis.Redis(connection_pool=pool),
    )
    client.submit(["warm-up: the script is loaded once"])
    sends.clear()
    job_id = client.submit(["one round trip"])
    ids = client.submit_many([["a"], ["b", "c"], ["d"]])
    assert len(sends) == 2, "one round trip per submit / submit_many"
    for job in Job.fetch_many([job_id, *ids], connection=client.connection, serializer=MsgpackSerializer):
        assert (job.func_name, job.get_status(), job.origin) == (EMBED_TASK, "queued", client.settings.queue)
    assert lanes(client)["interactive"].job_ids[-4:] == [job_id, *ids]
    lanes(client)["interactive"].empty()


def test_submit_many_is_all_or_nothing(redis_url):
    client = client_for(redis_url, max_queue_length=5)
    client.submit_many([["one"], ["two"], ["three"]])
    with pytest.raises(QueueFull, match="holds 3 jobs; 3 more would pass MAX_QUEUE_LENGTH=5"):
        client.submit_many([["four"], ["five"], ["six"]])
    assert lanes(client)["interactive"].count == 3
    client.connection.hset(model_key(client.settings.queue), mapping={"name": "m", "dim": 8})
    with pytest.raises(InvalidInput, match="dimensions=9 is more than the model's 8"):
        client.submit_many([["four"]], dimensions=9)
    assert lanes(client)["interactive"].count == 3
    lanes(client)["interactive"].empty()
    client.connection.delete(model_key(client.settings.queue))


def test_concurrent_producers_never_pass_max_queue_length(redis_url):
    limit, producers, attempts = 20, 8, 10
    queue_name = f"submit-{uuid.uuid4().hex[:8]}"
    clients = [client_for(redis_url, queue=queue_name, max_queue_length=limit) for _ in range(producers)]
    outcomes: list[str] = []
    start = threading.Barrier(producers)

    def produce(client: EmbedClient) -> None:
        start.wait()
        for i in range(attempts):
            try:
                client.submit([f"text {i}"])
                outcomes.append("queued")
            except QueueFull:
                outcomes.append("full")

    threads = [threading.Thread(target=produce, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert lanes(clients[0])["interactive"].count == limit
    assert outcomes.count("queued") == limit and outcomes.count("full") == producers * attempts - limit
    lanes(clients[0])["interactive"].empty()
