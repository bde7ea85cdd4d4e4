"""The fleet-wide embedding cache's wire format: what keys an entry (a hash of the text and of what
changes the model's input, never the text), what an entry holds (the model's vector before
`dimensions` and `normalize`, its token count and truncation flag), how a request asks to use it, and
how a job answered from it is read back. The look-ups run inside the enqueue script
(broker/lua/enqueue.lua) and the writes inside the worker's per-pass script (finish_pass.lua); both
build an entry's key as `cache_prefix(queue)` + the serving model's fingerprint + `:` + the text's hash."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack
import numpy as np

from embedq.broker.jobs import EmbedResult
from embedq.broker.vectors import shape

ENTRY_VERSION = 1
ENTRY_HEADER = struct.Struct("<BIB")  # version, tokens, truncated (0 / 1); then the float32 vector
POSITION = struct.Struct(">I")  # a hit's place in its job, before its entry (a partly cached job's hits)
CACHED_FIELD = "embedq_cached"  # a result stream entry's field: the entries of a job answered from the cache
SHAPE_FIELD = "embedq_shape"  # ... and how to shape them (msgpack [normalize, dimensions])
MODEL_FIELD = "embedq_model"  # ... and the model's name and dimension (its entries' size)
DIM_FIELD = "embedq_dim"
HITS_FIELD = "embedq_hits"  # a partly cached job's hash field: its hits, each POSITION + entry
CACHE_WORKER = "cache"  # EmbedResult.worker of a job no worker ran


@dataclass(frozen=True)
class CacheUse:
    """How one request uses the cache: `read` (look its texts up), `write` (let workers store what they
    compute), `scope` (entries are shared only between callers of one scope, e.g. one API key) and `only`
    (enqueue nothing a worker would have to run: the gateway's answer while no worker serves a model)."""

    read: bool = True
    write: bool = True
    scope: str = ""
    only: bool = False  # answer from the cache alone (NotCached, nothing enqueued, if a text is not in it)

    @property
    def off(self) -> bool:
        return not (self.read or self.write)


NO_CACHE = CacheUse(read=False, write=False)


@dataclass(frozen=True)
class CacheWrites:
    """What a pass stores (finish_pass.lua): entries under `prefix` + `fingerprint` + `:` + hash."""

    prefix: str  # "": none
    fingerprint: str
    ttl: int
    budget: int  # bytes the entries may count
    stats: str
    index: str
    entries: dict[str, bytes]  # text hash -> entry
    misses: int = 0  # texts the pass computed that were looked up first (the cache's miss count)

    @property
    def writing(self) -> bool:
        return bool(self.prefix and self.fingerprint and self.entries)

    def args(self) -> list[object]:
        """finish_pass.lua's cache arguments."""
        count = len(self.entries) if self.writing else 0
        return [self.prefix if self.writing else "", self.fingerprint, self.ttl, self.budget, count, self.misses]

    def pairs(self) -> list[object]:
        """Each entry's hash and bytes, after the histogram's pairs."""
        return [item for pair in self.entries.items() for item in pair] if self.writing else []


def text_hashes(texts: Sequence[str], use: CacheUse, instruction: str | None, prompt_name: str | None) -> list[str]:
    """Each text's key in the cache (32 hex digits): SHA-256 of the scope, the option that changes the
    model's input (instruction or prompt_name) and the text."""
    option = f"i{instruction}" if instruction is not None else f"p{prompt_name}" if prompt_name is not None else ""
    head = hashlib.sha256(f"{len(use.scope)}:{use.scope}\0{len(option)}:{option}\0".encode())
    hashes = []
    for text in texts:
        digest = head.copy()
        digest.update(text.encode())
        hashes.append(digest.hexdigest()[:32])
    return hashes


def pack_entry(vector: np.ndarray, tokens: int, truncated: bool) -> bytes:
    """One text's entry: the model's vector (before dimensions and normalize), its tokens, whether it was cut."""
    return ENTRY_HEADER.pack(ENTRY_VERSION, tokens, int(truncated)) + np.ascontiguousarray(vector, "<f4").tobytes()


def entry_size(dim: int) -> int:
    return ENTRY_HEADER.size + 4 * dim


@dataclass(frozen=True)
class Entries:
    vectors: np.ndarray  # float32 (n, dim): the model's vectors, not yet shaped
    tokens: list[int]
    truncated: list[bool]


def unpack_entries(entries: Sequence[bytes]) -> Entries:
    """Entries the enqueue script checked (version and size against the model's dimension)."""
    heads = [ENTRY_HEADER.unpack_from(entry) for entry in entries]
    body = b"".join(memoryview(entry)[ENTRY_HEADER.size :] for entry in entries)
    vectors = np.frombuffer(body, dtype="<f4").reshape(len(entries), -1).astype(np.float32)
    return Entries(vectors, [tokens for _, tokens, _ in heads], [bool(cut) for _, _, cut in heads])


def split_entries(blob: bytes, size: int) -> list[bytes]:
    return [blob[start : start + size] for start in range(0, len(blob), size)]


def unpack_hits(blob: bytes, dim: int) -> dict[int, bytes]:
    """A partly cached job's hits (HITS_FIELD): its texts' positions -> their entries."""
    step = POSITION.size + entry_size(dim)
    return {
        POSITION.unpack_from(blob, start)[0]: blob[start + POSITION.size : start + step]
        for start in range(0, len(blob), step)
    }


def pack_shape(normalize: bool, dimensions: int | None) -> bytes:
    packed: bytes = msgpack.packb([normalize, dimensions])
    return packed


def cached_result(job_id: str, fields: dict[bytes, bytes]) -> EmbedResult:
    """The result of a job answered from the cache alone, from its result stream entry: shaped here
    with the function the worker shapes with (bitwise the answer the entries were filled with)."""
    normalize, dimensions = msgpack.unpackb(fields[SHAPE_FIELD.encode()])
    blob = fields[CACHED_FIELD.encode()]
    entries = unpack_entries(split_entries(blob, entry_size(int(fields[DIM_FIELD.encode()]))))
    vectors = shape(entries.vectors, dimensions, normalize)
    texts = len(entries.tokens)
    return EmbedResult(
        job_id=job_id,
        embeddings=vectors,
        model=fields[MODEL_FIELD.encode()].decode(),
        dim=int(vectors.shape[1]),
        usage={"texts": texts, "tokens": sum(entries.tokens), "truncated": sum(entries.truncated), "cached": texts},
        timings={"queue_ms": 0.0, "total_ms": 0.0},
        worker=CACHE_WORKER,
        text_tokens=entries.tokens,
    )
