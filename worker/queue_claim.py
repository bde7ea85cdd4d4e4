"""One model per queue: a worker claims its queue for its model (name and dimension) before it takes
a job, and is refused when live workers of another model hold the queue. Vectors of two models (or of
one model in fp32 and int8) are not comparable, so they must never answer the same queue."""

from __future__ import annotations

import json

from redis import Redis
from redis.client import Pipeline

from embedq.producer.errors import InvalidSettings
from embedq.producer.protocol import QUEUES_KEY, model_key, serving_key

# Atomic: two workers of different models started at once cannot both win. The claim expires unless
# a heartbeat refreshes it, so a queue whose last worker of a model is gone can serve another model.
CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return held end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('HSET', KEYS[2], 'name', ARGV[3], 'dim', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
return false
"""


class ModelConflict(InvalidSettings):
    """Live workers of another model (name or dimension) already serve this queue."""


def claim_queue(connection: Redis, queue: str, model: str, dim: int, ttl: int) -> None:
    """Claim `queue` for `model`, or raise ModelConflict naming both models."""
    identity = json.dumps({"name": model, "dim": dim}, sort_keys=True)
    keys = (serving_key(queue), model_key(queue), QUEUES_KEY)
    held = connection.eval(CLAIM, len(keys), *keys, identity, ttl, model, dim, queue)
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
