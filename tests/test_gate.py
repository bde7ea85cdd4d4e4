"""The gateway's gate (producer/gateway/app.py) on its own: keys, body limit, counts, and an endpoint
that fails unexpectedly still answers in OpenAI's error shape."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter

from embedq.producer.gateway.app import Gate
from embedq.producer.gateway.openai_shape import send_json

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
    async def broken(body, receive, send):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    app, requests = gate(broken)
    answer = ask(app, "POST", "/v1/embeddings", json={"model": "m", "input": "secret text"})
    assert answer.status_code == 500
    assert answer.json()["error"] == {"message": "internal error", "type": "server_error", "param": None, "code": None}
    assert count(requests, "/v1/embeddings", "500") == 1
    assert "secret text" not in caplog.text and "RuntimeError: a bug" in caplog.text


def test_keys_body_limit_and_the_rest_of_the_app():
    async def echo(body, receive, send):  # type: ignore[no-untyped-def]
        await send_json(send, 200, {"length": len(body)})

    app, requests = gate(echo, keys=("k1",))
    assert ask(app, "POST", "/v1/embeddings", json={}).status_code == 401
    ok = ask(app, "POST", "/v1/embeddings", content=b"x" * 100, headers={"Authorization": "Bearer k1"})
    assert ok.status_code == 200 and ok.json() == {"length": 100}
    big = ask(app, "POST", "/v1/embeddings", content=b"x" * 2000, headers={"Authorization": "Bearer k1"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert ask(app, "GET", "/health").json() == {"status": "ok"}  # open, and served by the FastAPI app
    assert count(requests, "/v1/embeddings", "401") == 1 and count(requests, "/health", "200") == 1
