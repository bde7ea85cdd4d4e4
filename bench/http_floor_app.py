"""The smallest ASGI app that answers a POST as the gateway does (the head, then a small JSON body):
served by uvicorn with the gateway's loop and HTTP parser, it is the floor of one idle HTTP round trip
in Python, which bench/gateway.py measures beside the gateway (`uvicorn http_floor_app:app`)."""

from typing import Any

BODY = b'{"object":"list","data":[]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
