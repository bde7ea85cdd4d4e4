"""Which queue serves which model, read from what workers publish in Redis (the queues they claimed,
`embedq:queues`; each one's `embedq:{queue}:model` and live claim `embedq:{queue}:serving`), with one
AsyncEmbedClient per queue."""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis as AsyncRedis

from embedq.broker.direct import aclose
from embedq.broker.keys import QUEUES_KEY, model_key, serving_key
from embedq.broker.shards import records_of
from embedq.config.settings import GatewaySettings
from embedq.producer.aio import AsyncEmbedClient
from embedq.producer.stats import as_text

DIRECTORY_TTL = 2.0  # seconds the model directory is reused before Redis is read again


@dataclass(frozen=True)
class ServedModel:
    name: str
    dim: int
    queue: str
    live: bool  # some worker holds the queue's claim now
    shards: int = 1  # the queue's shards, as its workers claimed it (QUEUE_SHARDS)


class Fleet:
    def __init__(self, settings: GatewaySettings, connection: AsyncRedis) -> None:
        self.settings = settings
        self.connection = connection
        self._clients: dict[str, AsyncEmbedClient] = {}
        self._models: dict[str, ServedModel] = {}
        self._read_at = -DIRECTORY_TTL

    async def models(self) -> dict[str, ServedModel]:
        """Every model a worker has published, by name. Several queues of one model: the gateway's own
        EMBEDQ_QUEUE first, then a live one."""
        if time.monotonic() - self._read_at < DIRECTORY_TTL:
            return self._models
        found: dict[str, ServedModel] = {}
        queues = sorted(as_text(queue) for queue in await self.connection.smembers(QUEUES_KEY))
        async with self.connection.pipeline(transaction=False) as pipe:
            for queue in queues:
                records = records_of(queue, self.settings.redis_cluster)
                pipe.hgetall(model_key(records))
                pipe.exists(serving_key(records))
            replies = await pipe.execute()
        for queue, raw, live in zip(queues, replies[::2], replies[1::2]):
            facts = {as_text(k): as_text(v) for k, v in raw.items()}
            if "name" not in facts:
                continue
            shards = int(facts.get("shards", 1))
            model = ServedModel(facts["name"], int(facts.get("dim", 0)), queue, bool(live), shards)
            current = found.get(facts["name"])
            if current is None or (
                current.queue != self.settings.queue and ((live and not current.live) or queue == self.settings.queue)
            ):
                found[facts["name"]] = model
        self._models, self._read_at = found, time.monotonic()
        return found

    def resolve(self, requested: str) -> str:
        return self.settings.model_aliases.get(requested, requested)

    def client(self, model: ServedModel) -> AsyncEmbedClient:
        """A client of the model's queue, with its shards (one per queue and shard count)."""
        if (client := self._clients.get(model.queue)) is None or client.settings.queue_shards != model.shards:
            settings = self.settings.model_copy(update={"queue": model.queue, "queue_shards": model.shards})
            client = self._clients[model.queue] = AsyncEmbedClient(settings=settings, connection=self.connection)
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()  # closes its own sync connection, and the shared async pool
        await aclose(self.connection)
