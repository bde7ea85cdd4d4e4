"""`embedq embed-file`: a file through the queue into one .npy, resumable after an interruption."""

import json
import subprocess

import numpy as np
import pytest

from embedq import InvalidInput
from embedq.producer.embed_file import embed_file, read_texts
from embedq.worker.supervisor.spawn import embedq_command, settings_env

LINES = [f"line number {i} says something about topic {i % 7}" for i in range(150)]


def test_embed_file_writes_all_vectors_in_order_with_progress(service, encoder, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "vectors.npy"
    run = subprocess.run(
        [*embedq_command(), "embed-file", str(source), "--out", str(out), "--batch-size", "16"],
        capture_output=True,
        text=True,
        env=settings_env(service.settings),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "150/150" in run.stderr  # tqdm's progress bar
    vectors = np.load(out)
    np.testing.assert_allclose(vectors, encoder.encode(LINES).vectors, atol=1e-5)
    assert not out.with_name("vectors.npy.parts").exists()


class InterruptedClient:
    """Delegates to a real client, but is cut off (like Ctrl-C) at the given wait."""

    def __init__(self, client, interrupt_at: int):
        self.client, self.waits, self.interrupt_at = client, 0, interrupt_at
        self.priorities: set[str] = set()

    def submit_many(self, batches, priority):
        self.priorities.add(priority)
        return self.client.submit_many(batches, priority=priority)

    def wait(self, job_id, timeout):
        self.waits += 1
        if self.waits == self.interrupt_at:
            raise KeyboardInterrupt
        return self.client.wait(job_id, timeout=timeout)


def test_embed_file_resumes_from_finished_chunks(service, encoder, tmp_path):
    source = tmp_path / "texts.jsonl"
    source.write_text("\n".join(json.dumps({"text": line}) for line in LINES[:40]) + "\n")
    out = tmp_path / "vectors.npy"
    interrupted = InterruptedClient(service.client, interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        embed_file(interrupted, source, out, batch_size=10, progress=False)
    assert interrupted.priorities == {"bulk"}, "a file is bulk work"
    parts = out.with_name("vectors.npy.parts")
    assert sorted(p.name for p in parts.glob("*.npy")) == ["0000000.npy", "0000001.npy"]
    np.save(parts / "0000000.npy", np.full((10, 384), 7.0, dtype=np.float32))  # marks the chunk as reused

    result = embed_file(service.client, source, out, batch_size=10, progress=False)
    assert (result[:10] == 7.0).all(), "a finished chunk must be reused, not embedded again"
    np.testing.assert_allclose(result[10:], encoder.encode(LINES[10:40]).vectors, atol=1e-5)
    assert not parts.exists()


def test_a_blank_line_is_refused_with_its_line_number(tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("first\n\nthird\n")
    with pytest.raises(InvalidInput, match="texts.txt:2 is blank"):
        read_texts(source)
