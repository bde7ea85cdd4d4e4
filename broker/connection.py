"""Every Redis client embedq makes, in one place: from REDIS_URL, or, when REDIS_SENTINELS is set, through
Redis Sentinel (redis-py's), which finds the current primary and finds it again after a failover. The
URL then still gives the user, password, database and TLS parameters; its host and port are not used."""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import SSLConnection, parse_url
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry
from redis.sentinel import Sentinel

from embedq.broker.failures import unreachable
from embedq.config.settings import ClientSettings


def _through_sentinel(settings: ClientSettings, options: dict[str, Any]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The sentinels' addresses, the options for talking to them (the caller's timeouts), and the primary's
    connection options (REDIS_URL's, then the caller's)."""
    addresses = []
    for entry in settings.redis_sentinels:
        host, _, port = entry.rpartition(":")
        addresses.append((host, int(port)))
    primary: dict[str, Any] = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    for unused in ("host", "port", "path"):
        primary.pop(unused, None)
    if primary.pop("connection_class", None) is SSLConnection:
        primary["ssl"] = True  # redis-py's sentinel pool then makes TLS connections
    timeouts = {key: value for key, value in options.items() if key.startswith("socket_")}
    return addresses, timeouts, {**primary, **options}


def sync_redis(settings: ClientSettings, **options: Any) -> Redis:
    """A client for `settings`' Redis (its primary, through Sentinel when configured; redis-py's Cluster
    client on a Cluster)."""
    if settings.redis_cluster:
        try:  # it reads the Cluster's slot map at once: a refused password or no node answering shows here
            return RedisCluster.from_url(settings.redis_url, **options)  # type: ignore[return-value]
        except (RedisError, RedisClusterException, OSError) as error:
            cause = error.__cause__ if isinstance(error.__cause__, RedisError) else error  # what the nodes said
            raise unreachable(cause, settings.redis_url) from error
    if not settings.redis_sentinels:
        return Redis.from_url(settings.redis_url, **options)
    addresses, timeouts, primary = _through_sentinel(settings, options)
    # redis-py types its Sentinel from 8.2 on: the ignores hold for the releases before it
    sentinel = Sentinel(addresses, sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call, unused-ignore]
    return sentinel.master_for(settings.redis_sentinel_master, **primary)  # type: ignore[no-any-return, no-untyped-call, unused-ignore]


def async_redis(settings: ClientSettings, **options: Any) -> AsyncRedis:
    """As sync_redis, on redis.asyncio."""
    if settings.redis_cluster:
        return AsyncRedisCluster.from_url(settings.redis_url, **options)  # type: ignore[return-value]
    if not settings.redis_sentinels:
        return AsyncRedis.from_url(settings.redis_url, **options)
    addresses, timeouts, primary = _through_sentinel(settings, options)
    sentinel = AsyncSentinel(addresses, sentinel_kwargs=timeouts)  # type: ignore[no-untyped-call, unused-ignore]
    return sentinel.master_for(settings.redis_sentinel_master, **primary)  # type: ignore[no-any-return, unused-ignore]


CACHE_TIMEOUT = 0.5  # seconds: a cache Redis that hangs costs a miss this long at most, then look-ups rest


def sync_cache_redis(settings: ClientSettings) -> Redis | None:
    """A client for the cache's own Redis (CACHE_URL), None when the cache lives in the queue's: short
    timeouts and no retries, as a miss is the answer to any trouble there."""
    if not settings.cache_url:
        return None
    return Redis.from_url(
        settings.cache_url,
        socket_connect_timeout=CACHE_TIMEOUT,
        socket_timeout=CACHE_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


def async_cache_redis(settings: ClientSettings) -> AsyncRedis | None:
    """As sync_cache_redis, on redis.asyncio."""
    if not settings.cache_url:
        return None
    return AsyncRedis.from_url(
        settings.cache_url,
        socket_connect_timeout=CACHE_TIMEOUT,
        socket_timeout=CACHE_TIMEOUT,
        retry=AsyncRetry(NoBackoff(), 0),
    )


def redis_answers(target: str | Redis, timeout: float = 1.0) -> bool:
    """Whether a PING to this URL (or through this connection) is answered."""
    try:
        connection = (
            Redis.from_url(target, socket_connect_timeout=timeout, socket_timeout=timeout)
            if isinstance(target, str)
            else target
        )
        return bool(connection.ping())
    except (RedisError, OSError, ValueError):
        return False
