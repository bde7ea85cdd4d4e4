"""`embedq embed-file`: embed a text file through the queue into one .npy, with a progress bar.
Finished chunks are kept beside the output, so an interrupted run resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import deque
from pathlib import Path

import numpy as np
from tqdm import tqdm

from embedq.broker.lanes import Lane
from embedq.errors import InvalidInput
from embedq.producer.client import EmbedClient


def read_texts(source: Path) -> list[str]:
    """One text a line; for .jsonl, one JSON string or object with a "text" field a line."""
    texts = []
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n")
            if source.suffix == ".jsonl":
                if not line.strip():
                    continue
                record = json.loads(line)
                text = record.get("text") if isinstance(record, dict) else record
                if not isinstance(text, str):
                    raise InvalidInput(f'{source}:{number}: expected a string or an object with a "text" string')
                line = text
            elif not line.strip():
                raise InvalidInput(f"{source}:{number} is blank; every line must hold a text to embed")
            texts.append(line)
    if not texts:
        raise InvalidInput(f"{source} holds no texts")
    return texts


def embed_file(
    client: EmbedClient,
    source: Path,
    out: Path,
    *,
    batch_size: int = 64,
    in_flight: int = 32,
    timeout: float = 300.0,
    progress: bool = True,
    priority: Lane = "bulk",
) -> np.ndarray:
    """Embed every text of `source` in order and save them as float32 (n, dim) to `out`. Jobs of
    `batch_size` texts go to the bulk lane by default, `in_flight` of them queued at any time."""
    texts = read_texts(source)
    chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    parts = out.with_name(out.name + ".parts")
    _open_parts(parts, texts, batch_size)
    todo = [i for i in range(len(chunks)) if not (parts / f"{i:07d}.npy").exists()]
    already = sum(len(chunks[i]) for i in range(len(chunks)) if i not in set(todo))
    with tqdm(total=len(texts), initial=already, unit="text", disable=not progress, desc=source.name) as bar:
        waiting: deque[tuple[int, str]] = deque()
        while todo or waiting:
            if todo and len(waiting) < in_flight:  # keep the window full: the workers never run dry
                window, todo = todo[: in_flight - len(waiting)], todo[in_flight - len(waiting) :]
                waiting.extend(zip(window, client.submit_many([chunks[i] for i in window], priority=priority)))
            index, job_id = waiting.popleft()
            np.save(parts / f"{index:07d}.npy", client.wait(job_id, timeout=timeout).embeddings)
            bar.update(len(chunks[index]))
    result = np.concatenate([np.load(parts / f"{i:07d}.npy") for i in range(len(chunks))])
    staging = out.with_name(out.name + ".tmp.npy")
    np.save(staging, result)
    staging.replace(out)
    shutil.rmtree(parts)
    return result


def _open_parts(parts: Path, texts: list[str], batch_size: int) -> None:
    """Keep earlier chunks only if they were cut from the same texts with the same batch size."""
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    manifest = {"texts": len(texts), "sha256": digest, "batch_size": batch_size}
    manifest_path = parts / "manifest.json"
    if parts.is_dir() and manifest_path.is_file() and json.loads(manifest_path.read_text()) != manifest:
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest))
