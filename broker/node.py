"""Commands sent in one write on one of a Redis server's pooled connections, and their replies read: what
`client.pipeline(transaction=False)` with them queued returns from `execute(raise_on_error=False)`, through
redis-py's own connection, retry policy and reply parsing, without the rest of its pipeline machinery
(per-call observability records, the HIMPORT preflight, the pipeline object's own state). On the path of
every job (a submit and its wait, a worker's take and finish) that machinery costs about as much as the
round trip it wraps: ~35 µs a call in a hot loop on a 2-core VM, ~150 µs just after a wake-up, when every
instruction misses the caches (bench/latency_budget.py measures the whole path). The commands are packed
by hiredis in C (~3 µs a command; redis.asyncio packs in Python, ~15 µs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ResponseError

# Each command as redis-py's command_stack holds it: its arguments (name first), and its parse options.
Stack = Sequence[tuple[tuple[Any, ...], dict[str, Any]]]


def execute_on_node(client: Redis, stack: Stack) -> list[Any]:
    """Each command's parsed reply, an error reply in place as its exception (NoScriptError, OutOfMemoryError,
    ...). Connection errors are retried as the client's retry policy says, then raised."""
    pool: Any = client.connection_pool  # redis-py's pool and connections are untyped
    connection = pool.get_connection()
    try:
        replies: list[Any] = connection.retry.call_with_retry(
            lambda: _exchange(client, connection, stack), lambda _error: connection.disconnect()
        )
        return replies
    except BaseException:
        connection.disconnect()  # a reply left unread would answer the connection's next user
        raise
    finally:
        pool.release(connection)


def packed(stack: Stack) -> list[bytes]:
    """The commands in Redis' protocol, as redis-py would send them ("SCRIPT LOAD" is two words)."""
    return [
        b"".join(
            hiredis.pack_command((*args[0].split(), *args[1:]) if isinstance(args[0], str) else args)
            for args, _ in stack
        )
    ]


def _exchange(client: Any, connection: Any, stack: Stack) -> list[Any]:
    connection.send_packed_command(packed(stack))
    replies: list[Any] = []
    for args, options in stack:
        try:
            replies.append(client.parse_response(connection, args[0], **options))
        except ResponseError as error:
            replies.append(error)
    return replies


async def execute_on_node_async(client: AsyncRedis, stack: Stack) -> list[Any]:
    """`execute_on_node` on an asyncio client."""
    pool: Any = client.connection_pool
    connection = await pool.get_connection()
    try:
        replies: list[Any] = await connection.retry.call_with_retry(
            lambda: _exchange_async(client, connection, stack), lambda _error: connection.disconnect()
        )
        return replies
    except BaseException:  # a cancelled request too (the gateway's client went away mid-read)
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)


async def _exchange_async(client: AsyncRedis, connection: Any, stack: Stack) -> list[Any]:
    await connection.send_packed_command(packed(stack))
    replies: list[Any] = []
    for args, options in stack:
        try:
            replies.append(await client.parse_response(connection, args[0], **options))
        except ResponseError as error:
            replies.append(error)
    return replies
