"""Generated requests against every route of a real `embedq serve` (hypothesis): bodies that are JSON
of any shape or no JSON at all, any content type, odd headers, query strings and ids. The gateway
never answers 5xx to any of them, never hangs, and answers a normal request afterwards."""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedq.local.service import LocalService
from tests.conftest import KEY, MODEL, start_gateway
from tests.test_batches import stop

ROUTES = [
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("POST", "/v1/files"),
    ("GET", "/v1/files"),
    ("GET", "/v1/files/{id}"),
    ("DELETE", "/v1/files/{id}"),
    ("GET", "/v1/files/{id}/content"),
    ("POST", "/v1/batches"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/{id}"),
    ("POST", "/v1/batches/{id}/cancel"),
    ("GET", "/"),
    ("HEAD", "/"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/status.json"),
]
FIELDS = ["model", "input", "encoding_format", "dimensions", "user", "endpoint", "completion_window",
          "input_file_id", "metadata", "purpose", "custom_id", "method", "url", "body"]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what JSON parsers read as numbers
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from([MODEL, "float", "base64", "/v1/embeddings", "24h", "batch"])
)
keys = st.sampled_from(FIELDS) | st.text(max_size=8)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(keys, inner, max_size=6), max_leaves=20
)
# a valid body for each POST route, with some of its fields (and others) replaced by anything
VALID = {
    "/v1/embeddings": {"model": MODEL, "input": "a text", "encoding_format": "float"},
    "/v1/batches": {"input_file_id": "file-0", "endpoint": "/v1/embeddings", "completion_window": "24h"},
}
overrides = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=2)
# mostly what a client sends, so that most requests reach past the gate into the routes' own checks
content_types = st.sampled_from(
    ["application/json"] * 8
    + [None, "text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]
)
ids = st.text(alphabet=string.ascii_letters + string.digits + "-_.%~", min_size=1, max_size=80)
queries = st.dictionaries(
    st.sampled_from(["limit", "after", "purpose", "order"]), st.text(max_size=30) | st.integers().map(str), max_size=3
)
authorizations = st.sampled_from([f"Bearer {KEY}"] * 8 + ["Bearer nope", KEY, "", "Basic eA=="])


@pytest.fixture(scope="module")
def gateway(service: LocalService) -> Iterator[str]:
    process, url = start_gateway(service.settings, EMBEDQ_HTTP_MAX_BODY_BYTES="20000")
    yield url
    stop(process)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES + [route for route in ROUTES if route[0] == "POST"] * 3),
    near_valid=overrides,
    raw=st.booleans(),
    other=json_values.map(orjson.dumps) | st.binary(max_size=300),
    content_type=content_types,
    file_id=ids,
    query=queries,
    authorization=authorizations,
)
def test_no_generated_request_gets_a_5xx_or_hangs(
    gateway: str, route: tuple[str, str], near_valid: dict[str, Any], raw: bool, other: bytes, content_type: str | None,
    file_id: str, query: dict[str, Any], authorization: str,
) -> None:  # fmt: skip
    method, path = route
    body = orjson.dumps({**VALID[path], **near_valid}) if path in VALID and not raw else other
    headers = {"Authorization": authorization} if authorization else {}
    if content_type:
        headers["Content-Type"] = content_type
    answer = httpx.request(
        method,
        gateway + path.replace("{id}", file_id),
        params=query,
        content=body if method == "POST" else None,
        headers=headers,
        timeout=30,  # a hang fails here
    )
    assert answer.status_code < 500, (method, path, answer.status_code, answer.text[:300])
    if answer.status_code >= 400 and path.startswith("/v1/") and method != "HEAD":
        error = answer.json()["error"]  # OpenAI's error shape, whatever went wrong
        assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) < 1000


def test_a_normal_request_is_answered_after_the_fuzzing(gateway: str) -> None:
    answer = httpx.post(
        f"{gateway}/v1/embeddings",
        json={"model": MODEL, "input": "still here"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert answer.status_code == 200 and len(answer.json()["data"][0]["embedding"]) == 384
