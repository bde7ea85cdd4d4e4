"""The Batch API's pure parts: reading an input file (errors naming line numbers), cutting it into
chunks, and the directory file store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from embedq.producer.gateway.batch_input import MAX_LISTED_ERRORS, parse_input, plan_chunks
from embedq.producer.gateway.files import DirectoryStore, read_chunks

pytestmark = pytest.mark.unit


def line(custom_id: str, text: object = "hello", **body: object) -> bytes:
    request = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": text}}
    request["body"].update(body)  # type: ignore[attr-defined]
    return json.dumps(request).encode()


def parse(*lines: bytes, max_lines: int = 50_000, max_bytes: int | None = None):  # type: ignore[no-untyped-def]
    return parse_input(b"\n".join(lines) + b"\n", max_lines, lambda model: model == "m", max_bytes=max_bytes)


def test_a_valid_file_gives_its_lines_with_their_numbers_and_skips_blank_lines():
    parsed = parse(line("a"), b"", line("b", ["x", "y"]))
    assert parsed.errors == []
    assert [(item.number, item.custom_id, item.texts) for item in parsed.lines] == [(1, "a", 1), (3, "b", 2)]


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (b"{oops", "invalid_json_line"),
        (b"[1, 2]", "invalid_request"),
        (json.dumps({"method": "POST", "url": "/v1/embeddings", "body": {"model": "m"}}).encode(), "missing_custom_id"),
        (line("z").replace(b'"POST"', b'"GET"'), "invalid_method"),
        (line("z").replace(b"/v1/embeddings", b"/v1/chat/completions"), "invalid_url"),
        (line("z").replace(b'"model": "m"', b'"model": "gpt-4"'), "model_not_found"),
        (line("a"), "duplicate_custom_id"),
    ],
)
def test_each_kind_of_bad_line_is_named_by_its_number(bad, code):
    parsed = parse(line("a"), bad)
    assert [(error["line"], error["code"]) for error in parsed.errors] == [(2, code)]


def test_too_many_lines_too_many_bytes_and_an_empty_file_fail_the_file():
    assert parse(line("a"), line("b"), max_lines=1).errors[0]["code"] == "too_many_requests"
    assert parse(line("a"), max_bytes=10).errors[0]["code"] == "file_too_large"
    assert parse_input(b"\n\n", 10, lambda _: True).errors[0]["code"] == "empty_file"


def test_a_file_of_errors_lists_the_first_hundred_and_counts_the_rest():
    parsed = parse(*[b"{" for _ in range(250)])
    assert len(parsed.errors) == MAX_LISTED_ERRORS
    assert parsed.errors[-2]["line"] == MAX_LISTED_ERRORS - 1
    assert parsed.errors[-1]["message"] == "and 151 more lines with errors"


def test_chunks_group_lines_by_model_and_dimensions_ordered_by_length_and_never_split_a_line():
    lines = parse(
        line("a", ["tt"] * 3),
        line("b", "t", dimensions=64),
        line("c", ["t"] * 2),
        line("d", ["t"] * 10),
        line("e", "ttt", dimensions=64),
        line("f", "t"),
    ).lines
    chunks = plan_chunks(lines, chunk_texts=5)
    assert [[item.custom_id for item in chunk.lines] for chunk in chunks] == [["f", "c"], ["a"], ["d"], ["b", "e"]]
    assert [chunk.number for chunk in chunks] == [0, 1, 2, 3]
    assert [chunk.dimensions for chunk in chunks] == [None, None, None, 64]
    assert plan_chunks(lines, chunk_texts=5) == chunks  # every replica cuts the same chunks


def test_the_directory_store_writes_whole_objects_and_sweeps_old_ones(tmp_path: Path):
    store = DirectoryStore(tmp_path)

    def failing():  # type: ignore[no-untyped-def]
        yield b"half"
        raise OSError("disk gone")

    assert store.write("files/a", [b"one", b"two"]) == 6
    with pytest.raises(OSError):
        store.write("files/a", failing())
    assert b"".join(read_chunks(store.open("files/a"))) == b"onetwo"  # the old object, not half a new one
    assert list((tmp_path / "files").iterdir()) == [tmp_path / "files" / "a"]  # no partial file left
    store.write("batches/b/000001.part", [b"x"])
    store.delete("batches/b")
    assert not store.exists("batches/b/000001.part")
    assert store.sweep(time.time() - 60) == 0 and store.sweep(time.time() + 60) == 1
    with pytest.raises(ValueError, match="leaves the store"):
        store.open("../outside")
