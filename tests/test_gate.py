"""The gateway's gate (gateway/app.py) on its own: keys, body limit, counts, and an endpoint
that fails unexpectedly still answers in OpenAI's error shape."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter

from embedq.gateway.app import Gate
from embedq.gateway.openai_shape import send_json

pytestmark = pytest.mark.unit


def gate(endpoint, keys=()):  # type: ignore[no-untyped-def]
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    requests = Counter("requests", "answers", ["route", "status"], registry=CollectorRegistry())
    return Gate(app, endpoint, (1024, 4096), [key.encode() for key in keys], requests), requests


def ask(app, method, path, **kwargs):  # type: ignore[no-untyped-def]
    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gate") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(run())


def count(requests, route, status):  # type: ignore[no-untyped-def]
    return requests.labels(route, status)._value.get()


def test_an_endpoint_that_fails_unexpectedly_answers_500_in_openai_shape(caplog):
    async def broken(body, receive, send, *_):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    app, requests = gate(broken)
    answer = ask(app, "POST", "/v1/embeddings", json={"model": "m", "input": "secret text"})
    assert answer.status_code == 500
    assert answer.json()["error"] == {"message": "internal error", "type": "server_error", "param": None, "code": None}
    assert count(requests, "/v1/embeddings", "500") == 1
    assert "secret text" not in caplog.text and "RuntimeError: a bug" in caplog.text


def test_keys_body_limit_and_the_rest_of_the_app():
    async def echo(body, receive, send, *_):  # type: ignore[no-untyped-def]
        await send_json(send, 200, {"length": len(body)})

    app, requests = gate(echo, keys=("k1",))
    assert ask(app, "POST", "/v1/embeddings", json={}).status_code == 401
    headers = {"Authorization": "Bearer k1", "Content-Type": "application/json"}
    ok = ask(app, "POST", "/v1/embeddings", content=b"x" * 100, headers=headers)
    assert ok.status_code == 200 and ok.json() == {"length": 100}
    big = ask(app, "POST", "/v1/embeddings", content=b"x" * 2000, headers=headers)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert ask(app, "GET", "/health").json() == {"status": "ok"}  # open, and served by the FastAPI app
    assert count(requests, "/v1/embeddings", "401") == 1 and count(requests, "/health", "200") == 1


def test_a_body_at_the_limit_is_read_and_one_byte_more_is_413_declared_or_streamed():
    async def echo(body, receive, send, *_):  # type: ignore[no-untyped-def]
        await send_json(send, 200, {"length": len(body)})

    app, _ = gate(echo)
    json_body = {"Content-Type": "application/json"}
    assert ask(app, "POST", "/v1/embeddings", content=b"x" * 1024, headers=json_body).json() == {"length": 1024}
    assert ask(app, "POST", "/v1/embeddings", content=b"x" * 1025, headers=json_body).status_code == 413

    async def chunks(size: int):  # type: ignore[no-untyped-def]
        for _ in range(size):
            yield b"x"  # no Content-Length: counted as it streams in

    streamed = ask(app, "POST", "/v1/embeddings", content=chunks(1025), headers=json_body)
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    "authorization",
    [
        [],
        [("Authorization", "k1")],
        [("Authorization", "Basic k1")],
        [("Authorization", "Bearer k2")],
        [("Authorization", "Bearer k1"), ("Authorization", "Bearer k1")],
    ],
    ids=["none", "no scheme", "basic", "wrong key", "two headers"],
)
def test_a_key_counts_only_as_one_authorization_bearer_header(authorization):
    async def echo(body, receive, send, *_):  # type: ignore[no-untyped-def]
        await send_json(send, 200, {})

    app, _ = gate(echo, keys=("k1",))
    headers = httpx.Headers([("Content-Type", "application/json"), *authorization])
    answer = ask(app, "POST", "/v1/embeddings", content=b"{}", headers=headers)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
    assert (
        ask(
            app,
            "POST",
            "/v1/embeddings",
            content=b"{}",
            headers={"Authorization": "bearer k1", "Content-Type": "application/json"},
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_embeddings_and_batches_take_json_bodies_only(content_type):
    async def echo(body, receive, send, *_):  # type: ignore[no-untyped-def]
        await send_json(send, 200, {})

    app, _ = gate(echo)
    headers = {"Content-Type": content_type} if content_type else {}
    for path in ("/v1/embeddings", "/v1/batches"):
        answer = ask(app, "POST", path, content=b"{}", headers=headers)
        assert answer.status_code == 415 and answer.json()["error"]["code"] == "unsupported_media_type"
    charset = {"Content-Type": "application/json; charset=utf-8"}
    assert ask(app, "POST", "/v1/embeddings", content=b"{}", headers=charset).status_code == 200


def test_head_is_answered_where_get_is_with_the_same_headers_and_no_body():
    app, requests = gate(None)
    head, get = ask(app, "HEAD", "/health"), ask(app, "GET", "/health")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] != "0"
    assert count(requests, "/health", "200") == 2
