"""A batch's input file read as OpenAI's batch input (one request a line), checked before anything is
enqueued, and cut into chunks: runs of lines that go to the workers together. The file is read as a
stream and only an index is kept (each line's place in the file and what orders it), so checking a
file costs memory for its valid lines' index, not for its bytes or its bad lines. No other I/O: the
same file gives every gateway replica the same chunks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from embedq.gateway.openai_shape import parse_request, shown

ENDPOINT = "/v1/embeddings"
MAX_LISTED_ERRORS = 100  # errors named in a failed batch's `errors`; the last entry counts the rest
MAX_CUSTOM_ID = 512  # characters of a line's custom_id (OpenAI's cap)
SKIP_SIZE = 1024 * 1024  # bytes read at a time while skipping the rest of a line that is too long


@dataclass(frozen=True, slots=True)
class Line:
    """Where a valid line is in the input file, and what a chunk needs to know of it."""

    number: int  # 1-based, as an editor shows it
    offset: int  # its first byte in the file
    size: int  # its bytes, newline excluded
    custom_id: str
    model: str
    dimensions: Any  # as the body has it (checked when the line runs); grouping only
    texts: int  # how many texts it asks for (an off-schema `input` counts one)
    chars: int  # characters of its text(s): what orders a batch's lines into chunks


@dataclass(frozen=True)
class Chunk:
    number: int
    model: str  # as the lines name it (aliases resolved when the chunk runs)
    dimensions: Any
    lines: tuple[Line, ...]


@dataclass
class ParsedInput:
    lines: list[Line] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)  # OpenAI's batch error entries, at most 100
    bad_lines: int = 0  # every line with an error, listed or not


class LineError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_input(
    handle: BinaryIO,
    max_lines: int,
    known_model: Callable[[str], bool],
    *,
    max_bytes: int | None = None,
    max_line_bytes: int,
) -> ParsedInput:
    """Every line checked: JSON object, a unique non-empty `custom_id` of at most 512 characters,
    `method` POST, `url` /v1/embeddings, a `body` object naming a served model, at most
    `max_line_bytes` long. Reading stops at the line past `max_lines` (the file fails) or the byte
    past `max_bytes`. What a line's body asks of the model (texts, dimensions, encoding) is checked
    when it runs: a bad one fails that line alone."""
    parsed = ParsedInput()
    seen: dict[str, int] = {}
    models: dict[str, str] = {}  # one str per model name however many lines name it
    number = offset = requests = 0
    while True:
        raw = handle.readline(max_line_bytes + 1)
        if not raw:
            break
        number += 1
        start, offset = offset, offset + len(raw)
        too_long = len(raw.rstrip(b"\r\n")) > max_line_bytes
        if too_long and not raw.endswith(b"\n"):
            offset += skip_line(handle)
        if max_bytes is not None and offset > max_bytes:
            message = f"the input file has more than {max_bytes} bytes (FILES_MAX_BYTES)"
            parsed.errors = [error("file_too_large", message)]
            parsed.lines, parsed.bad_lines = [], 1
            return parsed
        text = raw.rstrip(b"\r\n")
        if not too_long and not text.strip():
            continue
        requests += 1
        if requests > max_lines:
            message = f"the input file has more than {max_lines} requests (BATCH_MAX_LINES)"
            parsed.errors.insert(0, error("too_many_requests", message))
            del parsed.errors[MAX_LISTED_ERRORS:]
            parsed.lines = []
            return parsed
        try:
            if too_long:
                raise LineError("line_too_long", f"line {number} has more than {max_line_bytes} bytes")
            parsed.lines.append(check_line(text, number, start, seen, known_model, models))
        except LineError as problem:
            parsed.bad_lines += 1
            if len(parsed.errors) < MAX_LISTED_ERRORS - 1:
                parsed.errors.append(error(problem.code, str(problem), number))
    if parsed.bad_lines > len(parsed.errors):
        rest = parsed.bad_lines - len(parsed.errors)
        parsed.errors.append(error("more_errors", f"and {rest} more lines with errors"))
    if not requests:
        parsed.errors.append(error("empty_file", "the input file holds no requests"))
    return parsed


def skip_line(handle: BinaryIO) -> int:
    """Read past the rest of the current line; the bytes skipped."""
    skipped = 0
    while piece := handle.readline(SKIP_SIZE):
        skipped += len(piece)
        if piece.endswith(b"\n"):
            break
    return skipped


def check_line(
    raw: bytes,
    number: int,
    offset: int,
    seen: dict[str, int],
    known_model: Callable[[str], bool],
    models: dict[str, str],
) -> Line:
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise LineError("invalid_json_line", f"line {number} is not valid JSON") from None
    if not isinstance(request, dict):
        raise LineError("invalid_request", f"line {number} is not a JSON object")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise LineError("missing_custom_id", f"line {number} has no custom_id (a non-empty string)")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise LineError(
            "custom_id_too_long", f"line {number}: custom_id has {len(custom_id)} characters; at most {MAX_CUSTOM_ID}"
        )
    if custom_id in seen:
        raise LineError(
            "duplicate_custom_id", f"line {number} repeats custom_id {shown(custom_id)} of line {seen[custom_id]}"
        )
    if request.get("method") != "POST":
        raise LineError("invalid_method", f"line {number}: method must be POST, got {shown(request.get('method'))}")
    if request.get("url") != ENDPOINT:
        raise LineError("invalid_url", f"line {number}: url must be {ENDPOINT}, got {shown(request.get('url'))}")
    body = request.get("body")
    if not isinstance(body, dict):
        raise LineError("invalid_request", f"line {number}: body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise LineError("missing_model", f"line {number}: body.model is required")
    if model not in models:
        if not known_model(model):
            message = f"line {number}: model {shown(model)} is not served here (GET /v1/models)"
            raise LineError("model_not_found", message)
        models[model] = model
    seen[custom_id] = number
    raw_input = body.get("input")
    items = raw_input if isinstance(raw_input, list) else [raw_input]
    dimensions = body.get("dimensions")
    return Line(
        number,
        offset,
        len(raw),
        custom_id,
        models[model],
        dimensions if isinstance(dimensions, int | None) else repr(dimensions)[:64],
        len(raw_input) if isinstance(raw_input, list) and raw_input else 1,
        sum(len(item) for item in items if isinstance(item, str)),
    )


def error(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def plan_chunks(lines: list[Line], chunk_texts: int) -> list[Chunk]:
    """Lines grouped by model and `dimensions`, each group ordered by length (so the texts a worker's
    pass gets pad to about the same length: OpenAI's output is in any order), cut into chunks of about
    `chunk_texts` texts; a line is never split, a longer one is a chunk of its own. The same lines
    always give the same chunks."""
    groups: dict[tuple[str, str], list[Line]] = {}
    for line in lines:
        groups.setdefault((line.model, repr(line.dimensions)), []).append(line)
    chunks: list[Chunk] = []
    for group in groups.values():
        group.sort(key=lambda line: (line.chars, line.number))
        current: list[Line] = []
        texts = 0
        for line in group:
            if current and texts + line.texts > chunk_texts:
                chunks.append(Chunk(len(chunks), current[0].model, current[0].dimensions, tuple(current)))
                current, texts = [], 0
            current.append(line)
            texts += line.texts
        chunks.append(Chunk(len(chunks), current[0].model, current[0].dimensions, tuple(current)))
    return chunks


def read_bodies(handle: BinaryIO, lines: tuple[Line, ...]) -> list[Any]:
    """The `body` of each of `lines`, read again from the input file by their offsets."""
    bodies = []
    for line in lines:
        handle.seek(line.offset)
        bodies.append(orjson.loads(handle.read(line.size))["body"])
    return bodies


def line_request(body: Any, max_inputs: int) -> tuple[list[str], str, int | None]:
    """(texts, encoding_format, dimensions) of a line's body; OpenAIError (400) names what is wrong."""
    texts, _, encoding, dimensions = parse_request(body, max_inputs)
    return texts, encoding, dimensions
