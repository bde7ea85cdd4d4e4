"""A cache in a Redis of its own (CACHE_URL): the client reads its texts' entries there (one round trip,
GETEX pushing each hit's expiry back) before it submits, and hands what it found to the enqueue script,
which uses them only if they were looked up under the model's current fingerprint. That fingerprint is
learnt from the previous submit's reply (the first submit of a client looks nothing up). The cache
Redis being down, refusing, or full costs a miss: its replies are never an error to the caller."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from embedq.broker.keys import cache_prefix
from embedq.config.settings import ClientSettings
from embedq.producer.enqueue import EnqueuePlan
from embedq.producer.steps import Outage, Send, Steps

RESTING_AFTER_OUTAGE = 5.0  # seconds a client looks nothing up after the cache's Redis did not answer


@dataclass
class RemoteCache:
    """Where a client reads entries (`prefix` + fingerprint + `:` + hash), and the model fingerprint
    its queue's last submit reported."""

    prefix: str
    ttl: int
    fingerprint: str = ""
    resting_until: float = 0.0  # monotonic: after an outage, look-ups rest (a Redis that is down costs nothing)

    @classmethod
    def of(cls, settings: ClientSettings) -> RemoteCache:
        return cls(cache_prefix(settings.queue), settings.cache_ttl)

    def learn(self, plan: EnqueuePlan, reply: Any) -> None:
        """What an accepted submit's reply says the serving model is."""
        if isinstance(reply, list | tuple) and reply and reply[0] in (b"ok", "ok"):
            self.fingerprint = plan.fingerprint(reply)


def lookup_steps(plan: EnqueuePlan, remote: RemoteCache | None) -> Steps[EnqueuePlan]:
    """The plan with the entries the cache's own Redis holds for its texts (unchanged with no such Redis,
    no known fingerprint or nothing to look up)."""
    hashes = plan.lookups
    if remote is None or not remote.fingerprint or not hashes or time.monotonic() < remote.resting_until:
        return plan
    keys = [f"{remote.prefix}{remote.fingerprint}:{hashed}" for hashed in hashes]
    reply = yield Send([("getex", (key,), {"ex": remote.ttl}) for key in keys], to="cache")
    if isinstance(reply, Outage):
        remote.resting_until = time.monotonic() + RESTING_AFTER_OUTAGE
    found = reply if isinstance(reply, list) and len(reply) == len(keys) else [None] * len(keys)
    return plan.with_entries(remote.fingerprint, [entry if isinstance(entry, bytes) else b"" for entry in found])
