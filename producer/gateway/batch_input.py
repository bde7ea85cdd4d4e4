"""A batch's input file read as OpenAI's batch input (one request a line), checked before anything is
enqueued, and cut into chunks: runs of lines that go to the workers together. Pure: no I/O, so the
same file gives every gateway replica the same chunks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from embedq.producer.gateway.openai_shape import parse_request

ENDPOINT = "/v1/embeddings"
MAX_LISTED_ERRORS = 100  # errors named in a failed batch's `errors`; the last entry counts the rest


@dataclass(frozen=True)
class Line:
    number: int  # 1-based, as an editor shows it
    custom_id: str
    body: dict[str, Any]

    @property
    def texts(self) -> int:
        """How many texts the line asks for (a line whose `input` is off-schema counts one)."""
        raw = self.body.get("input")
        return len(raw) if isinstance(raw, list) and raw else 1

    @property
    def chars(self) -> int:
        """The length of the line's text(s), in characters: what orders a batch's lines into chunks."""
        raw = self.body.get("input")
        items = raw if isinstance(raw, list) else [raw]
        return sum(len(item) for item in items if isinstance(item, str))

    @property
    def dimensions(self) -> Any:
        return self.body.get("dimensions")


@dataclass(frozen=True)
class Chunk:
    number: int
    model: str  # as the lines name it (aliases resolved when the chunk runs)
    dimensions: Any
    lines: tuple[Line, ...]


@dataclass
class ParsedInput:
    lines: list[Line] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # OpenAI's batch error entries


def parse_input(
    data: bytes, max_lines: int, known_model: Callable[[str], bool], *, max_bytes: int | None = None
) -> ParsedInput:
    """Every line checked: JSON object, a unique non-empty `custom_id`, `method` POST, `url`
    /v1/embeddings, a `body` object naming a served model. What a line's body asks of the model
    (texts, dimensions, encoding) is checked when it runs: a bad one fails that line alone."""
    parsed = ParsedInput()
    if max_bytes is not None and len(data) > max_bytes:
        parsed.errors.append(
            error("file_too_large", f"the input file has {len(data)} bytes; at most {max_bytes} (FILES_MAX_BYTES)")
        )
        return parsed
    seen: dict[str, int] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = check_line(raw, number, seen, known_model)
        except LineError as problem:
            parsed.errors.append(error(problem.code, str(problem), number))
            continue
        parsed.lines.append(line)
    if not parsed.lines and not parsed.errors:
        parsed.errors.append(error("empty_file", "the input file holds no requests"))
    if len(parsed.lines) + len(parsed.errors) > max_lines:
        parsed.errors.insert(
            0,
            error(
                "too_many_requests",
                f"the input file has {len(parsed.lines) + len(parsed.errors)} requests; at most {max_lines} "
                "(BATCH_MAX_LINES)",
            ),
        )
    if len(parsed.errors) > MAX_LISTED_ERRORS:
        rest = len(parsed.errors) - MAX_LISTED_ERRORS + 1
        parsed.errors[MAX_LISTED_ERRORS - 1 :] = [error("more_errors", f"and {rest} more lines with errors")]
    return parsed


class LineError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_line(raw: bytes, number: int, seen: dict[str, int], known_model: Callable[[str], bool]) -> Line:
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise LineError("invalid_json_line", f"line {number} is not valid JSON") from None
    if not isinstance(request, dict):
        raise LineError("invalid_request", f"line {number} is not a JSON object")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError("missing_custom_id", f"line {number} has no custom_id (a non-empty string)")
    if custom_id in seen:
        raise LineError(
            "duplicate_custom_id", f"line {number} repeats custom_id {custom_id!r} of line {seen[custom_id]}"
        )
    seen[custom_id] = number
    if request.get("method") != "POST":
        raise LineError("invalid_method", f"line {number}: method must be POST, got {request.get('method')!r}")
    if request.get("url") != ENDPOINT:
        raise LineError("invalid_url", f"line {number}: url must be {ENDPOINT}, got {request.get('url')!r}")
    body = request.get("body")
    if not isinstance(body, dict):
        raise LineError("invalid_request", f"line {number}: body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise LineError("missing_model", f"line {number}: body.model is required")
    if not known_model(model):
        raise LineError("model_not_found", f"line {number}: model {model!r} is not served here (GET /v1/models)")
    return Line(number, custom_id, body)


def error(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def plan_chunks(lines: list[Line], chunk_texts: int) -> list[Chunk]:
    """Lines grouped by model and `dimensions`, each group ordered by length (so the texts a worker's
    pass gets pad to about the same length: OpenAI's output is in any order), cut into chunks of about
    `chunk_texts` texts; a line is never split, a longer one is a chunk of its own. The same lines
    always give the same chunks."""
    groups: dict[tuple[str, str], list[Line]] = {}
    for line in lines:
        groups.setdefault((line.body["model"], repr(line.dimensions)), []).append(line)
    chunks: list[Chunk] = []
    for group in groups.values():
        group.sort(key=lambda line: (line.chars, line.number))
        current: list[Line] = []
        texts = 0
        for line in group:
            if current and texts + line.texts > chunk_texts:
                chunks.append(Chunk(len(chunks), current[0].body["model"], current[0].dimensions, tuple(current)))
                current, texts = [], 0
            current.append(line)
            texts += line.texts
        chunks.append(Chunk(len(chunks), current[0].body["model"], current[0].dimensions, tuple(current)))
    return chunks


def line_request(line: Line, max_inputs: int) -> tuple[list[str], str, int | None]:
    """(texts, encoding_format, dimensions) of a line's body; OpenAIError (400) names what is wrong."""
    texts, _, encoding, dimensions = parse_request(line.body, max_inputs)
    return texts, encoding, dimensions
