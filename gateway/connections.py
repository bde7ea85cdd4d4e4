"""uvicorn's HTTP protocol (httptools) with the two limits it lacks: a request's headers and body must
arrive within HTTP_READ_TIMEOUT (slow and silent clients are closed, an idle keep-alive connection
too), and past HTTP_MAX_CONNECTIONS open connections a new one gets 503 at once; and a response's
head and body leave in one write (OneWriteTransport). Builds on uvicorn's HttpToolsProtocol: its
`connections` set, `loop`, `transport`, `data_received` and `on_message_complete`
(tests/test_gateway_protocol.py drives the installed uvicorn's; tests/test_front_door.py the limits)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from embedq.gateway.openai_shape import OpenAIError


def busy_response() -> bytes:
    """A whole HTTP answer sent before the request is read: 503 in OpenAI's shape, then the connection closes."""
    body = orjson.dumps(
        OpenAIError(
            503, "the gateway has too many open connections; retry", type="server_error", code="too_many_connections"
        ).body()
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class OneWriteTransport:
    """A connection's transport that sends what is written in one turn of the event loop as one write.
    uvicorn writes a response's head as soon as it starts and its body after: two TCP segments (the
    socket has TCP_NODELAY), two system calls on the answer's path, and a client that may wake for the
    head alone (bench/gateway.py measures the idle latency). Everything else goes to the transport."""

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.transport, self.loop = transport, loop
        self.pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(data)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        if pending and not self.transport.is_closing():
            self.transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def guarded_protocol(read_timeout: float, max_connections: int) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn (`http=`)."""
    busy = busy_response()

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(busy)
                transport.close()
                return
            # what the request cycles write to; duck-typed: every other call goes to the real transport
            self.transport = cast(asyncio.Transport, OneWriteTransport(transport, self.loop))
            self.arm()  # a connection that never sends a byte is closed too

        def data_received(self, data: bytes) -> None:
            self.arm()  # a request begins (or goes on): it has read_timeout from its first byte
            super().data_received(data)

        def on_message_complete(self) -> None:
            self.disarm()  # the whole request is here: the app takes as long as its own timeouts allow
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def arm(self) -> None:
            if self.deadline is None:
                self.deadline = self.loop.call_later(read_timeout, self.expire)

        def disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def expire(self) -> None:
            self.deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedHttpToolsProtocol
