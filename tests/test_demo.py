"""`embedq demo`, the main job, as a user runs it: here with no Redis answering at the configured URL."""

import os
import subprocess

from embedq.worker.cli import embedq_command
from embedq.worker.local.redis_server import free_port


def test_demo_starts_a_private_redis_and_prints_similarities_and_metrics(model_dir):
    env = {**os.environ, "EMBEDQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "EMBEDQ_MODEL_DIR": str(model_dir)}
    run = subprocess.run([*embedq_command(), "demo"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "started a private redis-server" in out
    assert "cosine similarity" in out
    assert "'A man is playing a guitar.'" in out and "→ 'Someone strums an acoustic guitar on stage.'" in out
    assert "workers alive: 2" in out
    assert "infer_ms" in out and "p95" in out
    assert "supervisor stopped (exit code 0)" in out
