"""OpenAI's embeddings API, as its SDKs send and read it: request checks with OpenAI's error bodies,
and the response (float lists, or base64 of little-endian float32)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
from starlette.types import Send

from embedq.broker.jobs import EmbedResult
from embedq.errors import RedisOutOfMemory, Refusal

ENCODINGS = ("float", "base64")
RETRY_AFTER = "1"  # seconds, when the queue is full or Redis did not answer


class OpenAIError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def shown(value: Any, limit: int = 64) -> str:
    """A caller's value as an error message echoes it: its repr, cut to `limit` characters."""
    text = repr(value)
    return text[:limit] + "…" if len(text) > limit else text


def unavailable(error: Exception) -> OpenAIError:
    """503: Redis did not answer, or (RedisOutOfMemory: its message says so) refused the write."""
    return OpenAIError(
        503,
        str(error) if isinstance(error, RedisOutOfMemory) else f"Redis did not answer ({type(error).__name__})",
        type="server_error",
        code="queue_unavailable",
        headers={"Retry-After": RETRY_AFTER},
    )


def invalid(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def refused(refusal: Refusal, index: int) -> OpenAIError:
    """400 for a text a worker or the gateway refused: `index` is its place in the request's input."""
    subject = f"input[{index}]"
    messages = {
        "not_a_string": f"{subject} is {refusal.found}, not a string",
        "empty_text": f"{subject} is empty or whitespace only; there is nothing to embed",
        "too_many_characters": f"{subject} has {refusal.found} characters, "
        f"more than MAX_CHARS_PER_TEXT={refusal.limit}",
        "invalid_unicode": f"{subject} is not valid Unicode (lone surrogate at position {refusal.found})",
        "too_many_tokens": f"{subject} is longer than the model's maximum of {refusal.limit} tokens and "
        "EMBEDQ_HTTP_TRUNCATE=false",
    }
    code = "input_too_long" if refusal.code == "too_many_tokens" else None
    return invalid(messages.get(refusal.code, f"{subject} was refused ({refusal.code})"), "input", code)


def parse_request(body: Any, max_inputs: int) -> tuple[list[str], str, str, int | None]:
    """(texts, model, encoding_format, dimensions) of a /v1/embeddings body, or OpenAIError 400."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("'model' is required: the name of a served model (GET /v1/models lists them)", "model")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise invalid("'input' must be a string or a non-empty list of strings", "input")
    if any(isinstance(item, (int, list)) for item in texts):
        raise invalid(
            "'input' holds token ids; embedq takes text only. LangChain's OpenAIEmbeddings sends token ids "
            "unless created with check_embedding_ctx_length=False",
            "input",
            "token_ids_not_supported",
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise invalid(f"input[{index}] is {type(text).__name__}, not a string", "input")
        if not text:
            raise invalid(f"input[{index}] is an empty string", "input")
    if len(texts) > max_inputs:
        raise invalid(f"'input' has {len(texts)} texts; at most {max_inputs} per request", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ENCODINGS:
        choices = ", ".join(ENCODINGS)
        raise invalid(f"'encoding_format' must be one of {choices}, got {shown(encoding)}", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise invalid(f"'dimensions' must be a positive integer, got {shown(dimensions)}", "dimensions")
    return texts, model, encoding, dimensions


def encode(vector: np.ndarray, encoding: str) -> np.ndarray | str:
    """base64 of little-endian float32, or the float32 row itself (orjson writes each value's shortest
    float32 form, which reads back as the same float32)."""
    if encoding == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


def response(results: list[EmbedResult], model: str, encoding: str) -> dict[str, Any]:
    """One embedding per input text, in input order, over the jobs the request was split into."""
    vectors = np.concatenate([result.embeddings for result in results])
    return embeddings_body(vectors, sum(int(result.usage.get("tokens", 0)) for result in results), model, encoding)


def embeddings_body(vectors: np.ndarray, tokens: int, model: str, encoding: str) -> dict[str, Any]:
    """/v1/embeddings' answer for these vectors (in input order), which cost `tokens`."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encode(vector, encoding)}
            for index, vector in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


async def send_json(send: Send, status: int, content: Any, headers: dict[str, str] | None = None) -> None:
    """One whole JSON answer over ASGI."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
