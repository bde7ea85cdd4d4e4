"""The gateway's HTTP protocol (gateway/connections.py) on uvicorn's own HttpToolsProtocol, fed bytes
as a socket would: what it writes back, and in how many writes."""

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from embedq.gateway.connections import guarded_protocol

pytestmark = pytest.mark.unit
BODY = b'{"object":"list"}'


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app answering as the gateway does: the head, then the body (gateway/openai_shape.send_json)."""
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


class RecordingTransport(asyncio.Transport):
    """Each write the protocol makes, as one entry."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def writelines(self, chunks: Any) -> None:  # one system call (writev), as uvloop's transport makes it
        self.writes.append(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_a_response_leaves_in_one_write_head_and_body_together():
    async def exchange() -> list[bytes]:
        config = uvicorn.Config(answer, lifespan="off", log_level="error")
        config.load()
        protocol_class = guarded_protocol(read_timeout=5, max_connections=8)
        protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
        transport = RecordingTransport()
        protocol.connection_made(transport)
        for _ in range(2):  # and again on the kept-alive connection
            protocol.data_received(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            await asyncio.sleep(0.05)
        protocol.connection_lost(None)
        return transport.writes

    writes = asyncio.run(exchange())
    assert len(writes) == 2  # one per response
    for written in writes:
        assert written.startswith(b"HTTP/1.1 200 OK\r\n") and written.endswith(b"\r\n\r\n" + BODY)
