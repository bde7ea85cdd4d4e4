"""broker/direct.py and node.py against redis-py: the bytes it sends are the ones redis-py's own packer sends."""

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from embedq.broker.direct import stack_of
from embedq.broker.node import packed

pytestmark = pytest.mark.unit


def test_commands_are_packed_byte_for_byte_as_redis_py_packs_them():
    calls = [
        ("script_load", ("return 1",), {}),  # "SCRIPT LOAD": a command name of two words
        ("evalsha", ("a" * 40, 2, "k1", b"k2", 7, 0.1, 1 / 3, "é", memoryview(b"\x00\x81raw")), {}),
        ("xread", ({"rq:results:one": "0-0", "rq:results:two": "1-1"},), {"block": 100, "count": 1}),
        ("hmget", ("rq:job:one", "status", "origin"), {}),
        ("blpop", (["embedq:q:doorbell"], 1), {}),
    ]
    for client in (Redis(), AsyncRedis()):
        connection = client.connection_pool.make_connection()
        stack = stack_of(client, calls)
        assert packed(stack) == [b"".join(connection.pack_commands([args for args, _ in stack]))]
