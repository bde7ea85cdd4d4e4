"""What embedq sends in one write, and its replies read: to a Redis server (broker/node.py, which says
why not through redis-py's pipelines), or on a Redis Cluster to the primary of the one hash slot the
commands name (broker/cluster.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from embedq.broker.cluster import aclose_routed, execute_routed, execute_routed_async
from embedq.broker.node import Stack, execute_on_node, execute_on_node_async

STACK_BUILDER = Redis()  # builds stacks for Cluster clients (their pipelines keep commands otherwise); never connects


def stack_of(
    client: Redis | AsyncRedis | RedisCluster | AsyncRedisCluster,
    calls: Sequence[tuple[str, tuple[Any, ...], dict[str, Any]]],
) -> Stack:
    """The command stack of redis-py method calls (name, args, kwargs), built by redis-py's own methods."""
    builder = client if isinstance(client, (Redis, AsyncRedis)) else STACK_BUILDER
    pipe = builder.pipeline(transaction=False)
    for name, args, kwargs in calls:
        getattr(pipe, name)(*args, **kwargs)
    return list(pipe.command_stack)


def execute(client: Redis | RedisCluster, stack: Stack) -> list[Any]:
    """Each command's parsed reply, an error reply in place as its exception (NoScriptError, OutOfMemoryError,
    ...). Connection errors are retried as the client's retry policy says, then raised. On a Redis Cluster
    the stack goes to the node of its one hash slot, redirections followed."""
    if isinstance(client, RedisCluster):
        return execute_routed(client, stack)
    return execute_on_node(client, stack)


async def execute_async(client: AsyncRedis | AsyncRedisCluster, stack: Stack) -> list[Any]:
    """`execute` on an asyncio client."""
    if isinstance(client, AsyncRedisCluster):
        return await execute_routed_async(client, stack)
    return await execute_on_node_async(client, stack)


async def aclose(client: AsyncRedis | AsyncRedisCluster) -> None:
    """Close an asyncio client (on a Cluster with the node clients its direct sends used)."""
    if isinstance(client, AsyncRedisCluster):
        await aclose_routed(client)
    else:
        await client.aclose()
