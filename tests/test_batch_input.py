"""The Batch API's pure parts: reading an input file (errors naming line numbers), cutting it into
chunks, and the directory file store."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from embedq.gateway.batch.files import DirectoryStore, read_chunks
from embedq.gateway.batch.input_file import MAX_LISTED_ERRORS, parse_input, plan_chunks, read_bodies

pytestmark = pytest.mark.unit


def line(custom_id: str, text: object = "hello", **body: object) -> bytes:
    request = {"custom_id": custom_id, "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": text}}
    request["body"].update(body)  # type: ignore[attr-defined]
    return json.dumps(request).encode()


def parse(*lines: bytes, max_lines: int = 50_000, max_bytes: int | None = None, max_line_bytes: int = 10_000):  # type: ignore[no-untyped-def]
    data = io.BytesIO(b"\n".join(lines) + b"\n")
    return parse_input(data, max_lines, lambda model: model == "m", max_bytes=max_bytes, max_line_bytes=max_line_bytes)


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
    assert parse_input(io.BytesIO(b"\n\n"), 10, lambda _: True, max_line_bytes=100).errors[0]["code"] == "empty_file"


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


def test_the_line_limit_is_exact_a_file_at_it_runs_and_one_more_line_fails_it():
    assert parse(*[line(str(n)) for n in range(5)], max_lines=5).errors == []
    too_many = parse(*[line(str(n)) for n in range(6)], max_lines=5)
    assert [error["code"] for error in too_many.errors] == ["too_many_requests"] and too_many.lines == []


def test_a_line_at_the_byte_limit_is_read_and_one_byte_more_fails_that_line_alone():
    exact = line("a")
    longer = line("b") + b" "
    parsed = parse(exact, longer, line("c"), max_line_bytes=len(exact))
    assert [item.custom_id for item in parsed.lines] == ["a", "c"]
    assert [(error["line"], error["code"]) for error in parsed.errors] == [(2, "line_too_long")]
    huge = parse(line("a"), b"[" * 100_000, line("c"), max_line_bytes=1000)  # skipped, not read whole
    assert [item.number for item in huge.lines] == [1, 3]


def test_a_custom_id_of_512_characters_is_taken_and_513_names_the_line():
    assert parse(line("i" * 512)).errors == []
    assert [(e["line"], e["code"]) for e in parse(line("a"), line("i" * 513)).errors] == [(2, "custom_id_too_long")]


def test_a_million_bad_lines_keep_one_hundred_errors_and_count_the_rest():
    parsed = parse(*[b"x"] * 1_000_000, max_lines=2_000_000)
    assert len(parsed.errors) == MAX_LISTED_ERRORS and parsed.bad_lines == 1_000_000
    assert parsed.errors[-1] == {
        "code": "more_errors",
        "message": f"and {1_000_000 - MAX_LISTED_ERRORS + 1} more lines with errors",
        "param": None,
        "line": None,
    }


def test_reading_stops_at_the_line_past_the_limit_however_long_the_file():
    data = io.BytesIO(b"x\n" * 10_000_000)
    parsed = parse_input(data, 1000, lambda _: True, max_line_bytes=100)
    assert parsed.errors[0]["code"] == "too_many_requests" and data.tell() < 10_000


def test_the_index_finds_each_line_again_by_its_offset_with_any_line_ending():
    data = b"\r\n".join([line("a", "first"), b"", line("b", ["x", "yy"], dimensions=8)]) + b"\r\n"
    parsed = parse_input(io.BytesIO(data), 10, lambda _: True, max_line_bytes=1000)
    assert [(item.custom_id, item.texts, item.chars, item.dimensions) for item in parsed.lines] == [
        ("a", 1, 5, None),
        ("b", 2, 3, 8),
    ]
    bodies = read_bodies(io.BytesIO(data), tuple(parsed.lines))
    assert [body["input"] for body in bodies] == ["first", ["x", "yy"]]


def test_adopted_pieces_read_as_one_object_without_a_copy_and_adopting_again_changes_nothing(tmp_path: Path):
    store = DirectoryStore(tmp_path)
    store.write("batches/b/output/000001", [b"two\n"])
    store.write("batches/b/output/000000", [b"one\n"])
    inode = (tmp_path / "batches/b/output/000000").stat().st_ino
    assert store.adopt("batches/b/output", "files/out") == 8
    assert b"".join(read_chunks(store.open("files/out"))) == b"one\ntwo\n"
    assert (tmp_path / "files/out/000000").stat().st_ino == inode  # moved, not copied
    assert store.adopt("batches/b/output", "files/out") == 8  # a takeover finalizing again
    assert store.adopt("batches/b/error", "files/err") == 0  # no pieces: no object
    store.delete("files/out")
    assert not store.exists("files/out") and store.sweep(time.time() + 60) == 0
    assert list(tmp_path.rglob("*")) == []  # the empty directories left behind are swept too
