"""A worker's side of the fleet-wide cache: a partly cached job runs only its other texts and is
answered with its hits in place (shaped with its computed rows, by the one shaping function), and what
a pass computed is handed to its finish script to store. The look-ups happened at enqueue
(broker/lua/enqueue.lua); this module reads what they left in the job."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from redis import Redis
from redis.exceptions import RedisError

from embedq.broker.cache import HITS_FIELD, pack_entry, unpack_entries, unpack_hits
from embedq.broker.connection import sync_cache_redis
from embedq.broker.jobs import EmbedRequest
from embedq.broker.keys import cache_prefix
from embedq.broker.rq_private import Job
from embedq.broker.vectors import shape
from embedq.config import Settings
from embedq.worker.model.encoder import Encoded

log = logging.getLogger(__name__)

HASH_DIGITS = 32
BUDGET_SHARE_OF_MAXMEMORY = 4  # the cache counts at most a quarter of Redis' maxmemory: the queue comes first


def hits_of(job: Job, dim: int) -> dict[int, bytes]:
    """The job's texts found in the cache when it was enqueued: position -> entry."""
    blob = getattr(job, "extras", {}).get(HITS_FIELD)
    return unpack_hits(blob, dim) if blob else {}


def misses_only(request: EmbedRequest, hits: dict[int, bytes]) -> EmbedRequest:
    """The request with only the texts the cache did not have."""
    if not hits:
        return request
    return replace(request, texts=[text for place, text in enumerate(request.texts) if place not in hits])


def with_hits(request: EmbedRequest, computed: Encoded, hits: dict[int, bytes]) -> Encoded:
    """The job's answer: its computed rows and its cached ones, in input order, shaped together."""
    if not hits:
        return computed
    count = len(request.texts)
    cached_rows = sorted(hits)
    computed_rows = [place for place in range(count) if place not in hits]
    cached = unpack_entries([hits[place] for place in cached_rows])
    pooled = np.empty((count, cached.vectors.shape[1]), dtype=np.float32)
    pooled[cached_rows], pooled[computed_rows] = cached.vectors, computed.pooled
    tokens, cut = [0] * count, [False] * count
    for places, values, flags in (
        (cached_rows, cached.tokens, cached.truncated),
        (computed_rows, computed.text_tokens, computed.text_truncated),
    ):
        for place, value, flag in zip(places, values, flags):
            tokens[place], cut[place] = value, flag
    vectors = shape(pooled, request.dimensions, request.normalize)
    return Encoded(vectors, sum(tokens), sum(cut), computed.timings, computed.started, tokens, pooled, cut)


def entries_to_store(job: Job, encoded: Encoded, hits: dict[int, bytes]) -> dict[str, bytes]:
    """The entries of the job's computed texts, by their hashes (the client's, in the job's meta); none
    when its client asked that nothing be stored."""
    hashes = (job.meta or {}).get("cache")
    if not isinstance(hashes, str) or len(hashes) != HASH_DIGITS * len(encoded.text_tokens):
        return {}
    return {
        hashes[place * HASH_DIGITS : (place + 1) * HASH_DIGITS]: pack_entry(
            encoded.pooled[place], encoded.text_tokens[place], encoded.text_truncated[place]
        )
        for place in range(len(encoded.text_tokens))
        if place not in hits
    }


def cache_budget(connection: Redis, max_bytes: int) -> int:
    """The bytes the cache may count: CACHE_MAX_BYTES, and at most a quarter of Redis' maxmemory."""
    maxmemory = int(connection.info("memory").get("maxmemory", 0) or 0)
    return min(max_bytes, maxmemory // BUDGET_SHARE_OF_MAXMEMORY) if maxmemory else max_bytes


@dataclass
class RemoteStore:
    """The cache in a Redis of its own (CACHE_URL), which bounds it (maxmemory, allkeys-lru): a pass's
    entries written after its results, in one round trip. Trouble there costs the entries, never a job."""

    connection: Redis
    prefix: str  # with the model's fingerprint
    ttl: int
    failing: bool = False  # said once per outage

    @classmethod
    def of(cls, settings: Settings, fingerprint: str) -> RemoteStore | None:
        if (connection := sync_cache_redis(settings)) is None:
            return None
        return cls(connection, f"{cache_prefix(settings.queue)}{fingerprint}:", settings.cache_ttl)

    def store(self, entries: dict[str, bytes]) -> None:
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                for hashed, entry in entries.items():
                    pipe.set(self.prefix + hashed, entry, ex=self.ttl, nx=True)
                pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as error:
            if not self.failing:
                why = type(error).__name__
                log.warning("the cache's Redis (CACHE_URL) refused %d entries (%s): not stored", len(entries), why)
            self.failing = True
            return
        self.failing = False
