"""Whether Redis may drop what embedq keeps in it. With any `maxmemory-policy` but `noeviction`, a Redis
at its `maxmemory` evicts keys, and queued jobs and results are keys: jobs vanish without a trace. Read
from INFO memory (which rq needs anyway; CONFIG GET is often forbidden) wherever embedq starts: the
worker, `embedq stats`, the gateway's readiness."""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from embedq.errors import InvalidSettings

log = logging.getLogger(__name__)
FIX = (
    "set maxmemory-policy noeviction (redis.conf, CONFIG SET maxmemory-policy noeviction, or your provider's "
    "parameter group): a full Redis then refuses new jobs (RedisOutOfMemory) instead of dropping queued ones"
)


class EvictionRisk(InvalidSettings):
    """Redis may evict embedq's keys (or its policy cannot be read) and EMBEDQ_REQUIRE_NOEVICTION=true."""


def eviction_risk(connection: Redis) -> str | None:
    """None when Redis keeps every key (maxmemory-policy noeviction); else what the risk is and its fix.
    Redis not answering is the caller's to handle (ConnectionError / TimeoutError pass through)."""
    try:
        policy = connection.info("memory").get("maxmemory_policy")
    except (RedisConnectionError, RedisTimeoutError):
        raise
    except RedisError as error:  # NOPERM: an ACL without +info
        return (
            f"could not read Redis' maxmemory-policy (INFO memory: {error}); if it is not noeviction, Redis evicts "
            f"queued jobs and results when full: make sure it is, and allow +info to embedq's ACL user; {FIX}"
        )
    if policy == "noeviction":
        return None
    return (
        f"Redis' maxmemory-policy is {policy}: when it reaches maxmemory it evicts keys, and embedq's queued jobs "
        f"and results are keys, so jobs can vanish without a trace; {FIX}"
    )


def check_eviction(connection: Redis, require_noeviction: bool, who: str) -> str | None:
    """The risk, logged as a warning; EvictionRisk instead under EMBEDQ_REQUIRE_NOEVICTION=true."""
    return enforce(eviction_risk(connection), require_noeviction, who)


def enforce(risk: str | None, require_noeviction: bool, who: str) -> str | None:
    if risk and require_noeviction:
        raise EvictionRisk(f"{risk} (EMBEDQ_REQUIRE_NOEVICTION=true)")
    if risk:
        log.warning("%s: %s", who, risk)
    return risk
