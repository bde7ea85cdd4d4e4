"""One model per queue: a worker claims its queue for its model (name and dimension) before it takes
a job, and is refused when live workers of another model hold the queue. Vectors of two models (or of
one model in fp32 and int8) are not comparable, so they must never answer the same queue."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.client import Pipeline

from embedq.broker.cache import ENTRY_VERSION
from embedq.broker.keys import QUEUES_KEY, model_key, serving_key
from embedq.broker.scripts import bind
from embedq.broker.shards import records_of
from embedq.errors import InvalidSettings
from embedq.worker.model.encoder import Encoder

CHUNK = 1 << 20
EXTERNAL_DATA = (".onnx_data", ".data")  # large weight files beside a graph: hashed by name and size


class ModelConflict(InvalidSettings):
    """Live workers of another model (name or dimension) already serve this queue."""


def model_fingerprint(encoder: Encoder) -> str:
    """16 hex digits that change whenever the vectors may: the exported graph and tokenizer (their bytes),
    the precision, the pooling and maximum length in force, and the cache's entry format."""
    digest = hashlib.sha256()
    spec = encoder.spec
    for path in (spec.onnx_path, spec.tokenizer_path):
        with path.open("rb") as file:
            while chunk := file.read(CHUNK):
                digest.update(chunk)
    for path in sorted(spec.onnx_path.parent.iterdir()):
        if path.name.endswith(EXTERNAL_DATA):
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
    digest.update(f"{spec.precision}|{encoder.pooling}|{encoder.max_length}|{encoder.dim}|{ENTRY_VERSION}".encode())
    return digest.hexdigest()[:16]


def claim_queue(
    connection: Redis,
    queue: str,
    model: str,
    dim: int,
    ttl: int,
    fingerprint: str = "",
    shards: Sequence[str] = (),
    cluster: bool = False,
) -> None:
    """Claim `queue` for `model`, or raise ModelConflict naming both models. `fingerprint` (model_fingerprint):
    what the cache keys entries by; none, no entry is read or written on the queue. `shards`: the queue's
    shards (broker/shards.py), each of which gets the model's facts too (a submit reads its own shard's),
    and whose count the queue's facts keep (the gateway and `embedq stats` find the shards by it).
    `cluster`: on a Redis Cluster (the queue's records keyed as shards.records_of says)."""
    identity = json.dumps({"name": model, "dim": dim}, sort_keys=True)
    records = records_of(queue, cluster)
    keys = (serving_key(records), model_key(records))
    count = max(len(shards), 1)
    held = bind(connection, "claim_queue")(keys, [identity, ttl, model, dim, fingerprint, count])
    if not held:
        facts: dict[Any, Any] = {"name": model, "dim": dim, "fingerprint": fingerprint}  # redis-py: invariant keys
        with connection.pipeline(transaction=False) as pipe:
            pipe.sadd(QUEUES_KEY, queue)
            for shard in (shard for shard in shards if shard != records):
                pipe.hset(model_key(shard), mapping=facts)
                if not fingerprint:
                    pipe.hdel(model_key(shard), "fingerprint")
            pipe.execute()
    if held:
        other = json.loads(held)
        raise ModelConflict(
            f"queue {queue!r} is served by live workers of {other['name']} (dim {other['dim']}); this worker "
            f"serves {model} (dim {dim}), and vectors of two models must not share a queue: start it on a queue "
            f"of its own (EMBEDQ_QUEUE), or stop the {other['name']} workers first (their claim lapses {ttl} s "
            "after the last one stops)"
        )


def refresh_claim(target: Redis | Pipeline, queue: str, ttl: int, cluster: bool = False) -> None:
    target.expire(serving_key(records_of(queue, cluster)), ttl)
