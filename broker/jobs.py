"""The job and result wire format: the msgpack serializer rq stores jobs with, job ids, the payload
a job carries and the checks both sides run on it, and the packed result a worker writes."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from embedq.config.settings import Limits
from embedq.errors import TEXT_RULES, InvalidInput, Refusal

EMBED_TASK = "embedq.worker.tasks.embed"  # the function every queued job names (a wire contract)
PAYLOAD_VERSION = 1


def new_job_id(result_ttl: int, tag: str = "") -> str:
    """32 hex digits: the enqueue time (unix s, 8), the job's result TTL (s, 6; capped), 72 random bits.
    A job's records stay in Redis at least until enqueue time + result TTL (it cannot finish before it is
    enqueued), so a waiter that finds them gone before then knows Redis lost the job. On a tagged shard
    (broker/shards.py) the shard's `{tag}` comes first, so the job's keys share the shard's hash slot."""
    return f"{tag}{int(time.time()):08x}{min(result_ttl, 0xFFFFFF):06x}{secrets.token_hex(9)}"


def job_lifetime(job_id: str) -> tuple[float, int] | None:
    """(enqueued at, unix s; result TTL, s) of a job with a new_job_id() id; None for any other id (rq's own)."""
    digits = job_id.rpartition("}")[2]
    if len(digits) != 32 or not all(char in string.hexdigits for char in digits):
        return None
    return float(int(digits[:8], 16)), int(digits[8:14], 16)


class MsgpackSerializer:
    """rq serializer that can only ever yield plain data: never pickle, which executes code from Redis."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        packed: bytes = msgpack.packb(obj, use_bin_type=True)
        return packed

    @staticmethod
    def loads(data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False)


@dataclass(frozen=True)
class EmbedRequest:
    """One job's work: texts in order plus how to shape their vectors."""

    texts: list[str]
    instruction: str | None = None
    normalize: bool = True
    dimensions: int | None = None
    prompt_name: str | None = None
    truncate: bool = True  # False: a text over the model's maximum length fails the job, naming it

    def to_payload(self) -> dict[str, Any]:
        payload = {
            "v": PAYLOAD_VERSION,
            "texts": self.texts,
            "instruction": self.instruction,
            "normalize": self.normalize,
            "dimensions": self.dimensions,
            "prompt_name": self.prompt_name,
        }
        if not self.truncate:  # sent only when asked for, so the default payload stays what older workers read
            payload["truncate"] = False
        return payload

    @classmethod
    def from_payload(cls, payload: Any, limits: Limits) -> EmbedRequest:
        """Parse what a job carries; anything off-schema raises InvalidInput."""
        if not isinstance(payload, dict):
            raise InvalidInput(f"job payload must be a map, got {type(payload).__name__}")
        if payload.get("v") != PAYLOAD_VERSION:
            raise InvalidInput(f"job payload version must be {PAYLOAD_VERSION}, got {payload.get('v')!r}")
        unknown = set(payload) - {"v", "texts", "instruction", "normalize", "dimensions", "prompt_name", "truncate"}
        if unknown:
            raise InvalidInput(f"job payload has unknown fields: {sorted(unknown)}")
        return validate_request(
            payload.get("texts"),
            instruction=payload.get("instruction"),
            normalize=payload.get("normalize", True),
            dimensions=payload.get("dimensions"),
            prompt_name=payload.get("prompt_name"),
            truncate=payload.get("truncate", True),
            limits=limits,
        )


def validate_request(
    texts: Any,
    *,
    instruction: Any = None,
    normalize: Any = True,
    dimensions: Any = None,
    prompt_name: Any = None,
    truncate: Any = True,
    limits: Limits,
) -> EmbedRequest:
    """Check a request against the schema and limits; the error names the field and the limit."""
    if not isinstance(texts, list):
        raise InvalidInput(f"texts must be a list of str, got {type(texts).__name__}")
    if not texts:
        raise InvalidInput("texts must not be empty")
    if len(texts) > limits.max_texts_per_job:
        raise InvalidInput(
            f"texts has {len(texts)} items, more than MAX_TEXTS_PER_JOB={limits.max_texts_per_job}; "
            "split it with submit_many"
        )
    for index, text in enumerate(texts):
        _check_text(f"texts[{index}]", text, limits.max_chars_per_text, index)
    if instruction is not None:
        _check_text("instruction", instruction, limits.max_chars_per_text)
    if not isinstance(normalize, bool):
        raise InvalidInput(f"normalize must be a bool, got {type(normalize).__name__}")
    if dimensions is not None and (isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1):
        raise InvalidInput(f"dimensions must be a positive int or None, got {dimensions!r}")
    if prompt_name is not None:
        _check_text("prompt_name", prompt_name, limits.max_chars_per_text)
        if instruction is not None:
            raise InvalidInput("give instruction or prompt_name, not both")
    if not isinstance(truncate, bool):
        raise InvalidInput(f"truncate must be a bool, got {type(truncate).__name__}")
    return EmbedRequest(list(texts), instruction, normalize, dimensions, prompt_name, truncate)


def validate_batches(batches: Sequence[Any], *, limits: Limits, **options: Any) -> list[EmbedRequest]:
    """Every batch checked (validate_request) before any is enqueued."""
    return [validate_request(batch, limits=limits, **options) for batch in batches]


def _check_text(name: str, text: Any, max_chars: int, index: int | None = None) -> None:
    """`index`: the text's place in its job, given for texts (their refusal says which), not options."""
    if not isinstance(text, str):
        found = type(text).__name__
        raise _refused(f"{name} must be a str, got {found}", index, "not_a_string", found=found)
    if not text.strip():
        raise _refused(f"{name} is empty or whitespace only; there is nothing to embed", index, "empty_text")
    if len(text) > max_chars:
        message = f"{name} has {len(text)} characters, more than MAX_CHARS_PER_TEXT={max_chars}"
        raise _refused(message, index, "too_many_characters", max_chars, len(text))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        message = f"{name} is not valid Unicode (lone surrogate at position {error.start})"
        raise _refused(message, index, "invalid_unicode", found=error.start) from None


def _refused(
    message: str, index: int | None, code: str, limit: int | None = None, found: int | str | None = None
) -> InvalidInput:
    return InvalidInput(message, None if index is None else Refusal(code, index, limit, found))


def pack_refusal(refusal: Refusal) -> bytes:
    """A refusal as a failed job carries it (REFUSAL_FIELD of its hash)."""
    return MsgpackSerializer.dumps([refusal.code, refusal.index, refusal.limit, refusal.found])


def unpack_refusal(raw: bytes | None) -> Refusal | None:
    """The refusal a failed job carries; None for none, or for one this version cannot read."""
    try:
        code, index, limit, found = MsgpackSerializer.loads(raw) if raw else (None, None, None, None)
    except (ValueError, TypeError):
        return None
    return Refusal(code, index, limit, found) if code in TEXT_RULES and isinstance(index, int) else None


@dataclass
class EmbedResult:
    """A finished job: one float32 row per input text, in input order."""

    job_id: str
    embeddings: np.ndarray
    model: str
    dim: int
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    worker: str = ""
    text_tokens: list[int] = field(default_factory=list)  # per text, summing to usage["tokens"]; [] from older workers


def pack_result(result: EmbedResult) -> bytes:
    vectors = np.ascontiguousarray(result.embeddings, dtype="<f4")
    packed: bytes = msgpack.packb(
        {
            "v": PAYLOAD_VERSION,
            "job_id": result.job_id,
            "shape": list(vectors.shape),
            "vectors": vectors.tobytes(),
            "model": result.model,
            "usage": result.usage,
            "timings": result.timings,
            "worker": result.worker,
            "text_tokens": result.text_tokens,
        },
        use_bin_type=True,
    )
    return packed


def unpack_result(data: bytes) -> EmbedResult:
    record = msgpack.unpackb(data, raw=False)
    rows, dim = record["shape"]
    vectors = np.frombuffer(record["vectors"], dtype="<f4").reshape(rows, dim).astype(np.float32)
    return EmbedResult(
        job_id=record["job_id"],
        embeddings=vectors,
        model=record["model"],
        dim=dim,
        usage=record["usage"],
        timings=record["timings"],
        worker=record["worker"],
        text_tokens=record.get("text_tokens", []),
    )
