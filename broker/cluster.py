"""embedq's direct sends (broker/direct.py) on a Redis Cluster: a send's commands all name keys of one
hash slot (a shard's), so they go, in one write as on a standalone Redis, to the primary that owns that slot,
through a plain client of that node. Redirections are followed as redis-py's Cluster client follows its
own: MOVED (the slot has moved: the slot map is read again), ASK (the slot is being migrated and the key
is already on the target: sent there after ASKING), TRYAGAIN and CLUSTERDOWN (a migration or failover
in progress: sent again shortly), and a node that cannot be reached (failed over: the map read again).
A refused command did not run, so sending the whole send again runs each of its commands once."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Generator, Sequence
from typing import Any

from redis import Redis
from redis.asyncio import ConnectionPool as AsyncConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from embedq.broker.node import Stack, execute_on_node, execute_on_node_async

REDIRECTS = 16  # sends of one stack before its last refusal is raised
SETTLE = 0.25  # seconds to wait on TRYAGAIN / CLUSTERDOWN / an unreachable node, doubled each time, at most 2 s
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, OSError)
KEYLESS = {"PING", "SCRIPT", "INFO", "TIME", "ECHO", "CONFIG", "CLIENT"}


def first_key(args: Sequence[Any]) -> Any:
    """The first key a command names (None for one that names none): what its slot is read from."""
    name = args[0].upper() if isinstance(args[0], str) else bytes(args[0]).decode().upper()
    name = name.split()[0]
    if name in KEYLESS:
        return None
    if name in {"EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL"}:
        return args[3] if int(args[2]) > 0 else None
    if name in {"XREAD", "XREADGROUP"}:
        words = [arg.decode() if isinstance(arg, bytes) else str(arg) for arg in args]  # redis-py: b"STREAMS"
        return args[[word.upper() for word in words].index("STREAMS") + 1]
    return args[1] if len(args) > 1 else None


def stack_slot(stack: Stack) -> int | None:
    """The one hash slot every keyed command of `stack` names; None when none names a key. A stack over
    several slots is a bug here (ValueError), never sent: the Cluster would refuse it command by command."""
    slots = {key_slot(_encoded(key)) for args, _ in stack if (key := first_key(args)) is not None}
    if len(slots) > 1:
        names = sorted({str(args[0]) for args, _ in stack})
        raise ValueError(f"one send names keys of {len(slots)} hash slots ({', '.join(names)})")
    return slots.pop() if slots else None


def _encoded(key: Any) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


def _refusal(replies: list[Any]) -> Exception | None:
    refused = (MovedError, AskError, TryAgainError, ClusterDownError)
    return next((reply for reply in replies if isinstance(reply, refused)), None)


def _settle(attempt: int) -> float:
    return float(min(SETTLE * 2**attempt, 2.0))


# What the routing asks its driver (sync or asyncio) for: a send, a rest (and the slot map read again
# after it, or not), or the slot map read again; a send's reply (or the error it raised) comes back.
Action = tuple[str, Any, Any]
ASKING: tuple[tuple[Any, ...], dict[str, Any]] = (("ASKING",), {})


def _routing(cluster: RedisCluster | AsyncRedisCluster, stack: Stack) -> Generator[Action, Any, list[Any]]:
    """The stack's sends, redirections followed: one routine for both drivers below."""
    slot = stack_slot(stack)
    asking: Any = None
    for attempt in range(REDIRECTS):
        last = attempt == REDIRECTS - 1
        try:
            if asking is not None:
                node = asking
            elif slot is None:
                node = cluster.get_default_node()  # type: ignore[no-untyped-call, unused-ignore]
            else:
                node = cluster.nodes_manager.get_node_from_slot(slot)
            sent = [ASKING, *stack] if asking is not None else stack
            replies: list[Any] = (yield ("send", node, sent))[1 if asking is not None else 0 :]
        except (*UNREACHABLE, RedisClusterException):
            if last:
                raise
            yield ("rest", attempt, True)
            asking = None
            continue
        asking = None
        refusal = _refusal(replies)
        if refusal is None or last:
            return replies
        if isinstance(refusal, AskError):
            asking = cluster.nodes_manager.get_node(refusal.host, refusal.port)
            if asking is None:
                yield ("refresh", None, None)
                asking = cluster.nodes_manager.get_node(refusal.host, refusal.port)
        elif isinstance(refusal, MovedError):
            yield ("refresh", None, None)
        else:
            yield ("rest", attempt, isinstance(refusal, ClusterDownError))
    raise AssertionError("unreachable")  # the loop returns or raises


def execute_routed(cluster: RedisCluster, stack: Stack) -> list[Any]:
    """broker/direct.py's execute on the primary of the stack's slot, redirections followed."""
    routing, reply, error = _routing(cluster, stack), None, None
    while True:
        try:
            kind, what, detail = routing.throw(error) if error is not None else routing.send(reply)
        except StopIteration as done:
            return list(done.value)
        reply = error = None
        if kind == "send":
            try:
                reply = execute_on_node(cluster.get_redis_connection(what), detail)
            except (*UNREACHABLE, RedisClusterException) as failed:
                error = failed
            continue
        if kind == "rest":
            time.sleep(_settle(what))
        if kind == "refresh" or detail:
            cluster.nodes_manager.initialize()


def node_client(cluster: RedisCluster, key: str) -> Redis:
    """A plain client of the primary that owns `key`'s slot now: for code (rq's) that opens a transaction
    the Cluster client cannot, over keys of that one slot."""
    return cluster.get_redis_connection(cluster.get_node_from_key(key))  # type: ignore[no-untyped-call]


class AsyncNodes:
    """Plain asyncio clients of a Cluster's nodes, one per node, with the connections the Cluster client makes."""

    def __init__(self) -> None:
        self.clients: dict[str, AsyncRedis] = {}

    def client(self, node: Any) -> AsyncRedis:
        if (client := self.clients.get(node.name)) is None:
            pool = AsyncConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
            client = self.clients[node.name] = AsyncRedis(connection_pool=pool)
        return client

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()


# Each Cluster client's node clients, for as long as the Cluster client lives (or until aclose_routed).
_ASYNC_NODES: weakref.WeakKeyDictionary[AsyncRedisCluster, AsyncNodes] = weakref.WeakKeyDictionary()


def async_nodes(cluster: AsyncRedisCluster) -> AsyncNodes:
    """The node clients kept for this Cluster client."""
    if (nodes := _ASYNC_NODES.get(cluster)) is None:
        nodes = _ASYNC_NODES[cluster] = AsyncNodes()
    return nodes


async def aclose_routed(cluster: AsyncRedisCluster) -> None:
    """Close the Cluster client and the node clients its direct sends used."""
    if (nodes := _ASYNC_NODES.pop(cluster, None)) is not None:
        await nodes.close()
    await cluster.aclose()


async def execute_routed_async(cluster: AsyncRedisCluster, stack: Stack) -> list[Any]:
    """execute_routed on redis.asyncio."""
    nodes = async_nodes(cluster)
    if not cluster.nodes_manager.slots_cache:
        await cluster.initialize()
    routing, reply, error = _routing(cluster, stack), None, None
    while True:
        try:
            kind, what, detail = routing.throw(error) if error is not None else routing.send(reply)
        except StopIteration as done:
            return list(done.value)
        reply = error = None
        if kind == "send":
            try:
                reply = await execute_on_node_async(nodes.client(what), detail)
            except (*UNREACHABLE, RedisClusterException) as failed:
                error = failed
            continue
        if kind == "rest":
            await asyncio.sleep(_settle(what))
        if kind == "refresh" or detail:
            await cluster.nodes_manager.initialize()
