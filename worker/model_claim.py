"""One model per queue: a worker claims its queue for its model (name and dimension) before it takes
a job, and is refused when live workers of another model hold the queue. Vectors of two models (or of
one model in fp32 and int8) are not comparable, so they must never answer the same queue."""

from __future__ import annotations

import json

from redis import Redis
from redis.client import Pipeline

from embedq.broker.keys import QUEUES_KEY, model_key, serving_key
from embedq.broker.scripts import bind
from embedq.errors import InvalidSettings


class ModelConflict(InvalidSettings):
    """Live workers of another model (name or dimension) already serve this queue."""


def claim_queue(connection: Redis, queue: str, model: str, dim: int, ttl: int) -> None:
    """Claim `queue` for `model`, or raise ModelConflict naming both models."""
    identity = json.dumps({"name": model, "dim": dim}, sort_keys=True)
    keys = (serving_key(queue), model_key(queue), QUEUES_KEY)
    held = bind(connection, "claim_queue")(keys, [identity, ttl, model, dim, queue])
    if held:
        other = json.loads(held)
        raise ModelConflict(
            f"queue {queue!r} is served by live workers of {other['name']} (dim {other['dim']}); this worker "
            f"serves {model} (dim {dim}), and vectors of two models must not share a queue: start it on a queue "
            f"of its own (EMBEDQ_QUEUE), or stop the {other['name']} workers first (their claim lapses {ttl} s "
            "after the last one stops)"
        )


def refresh_claim(target: Redis | Pipeline, queue: str, ttl: int) -> None:
    target.expire(serving_key(queue), ttl)
