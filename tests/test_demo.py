"""`embedq demo`, the main job, as a user runs it: here with no Redis answering at the configured URL."""

import os
import signal
import subprocess

import httpx

from embedq.local.redis_server import free_port
from embedq.worker.supervisor.spawn import embedq_command


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


def test_demo_serve_prints_the_gateway_url_and_serves_until_stopped(model_dir):
    port = free_port()
    env = {**os.environ, "EMBEDQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "EMBEDQ_MODEL_DIR": str(model_dir)}
    demo = subprocess.Popen(
        [*embedq_command(), "demo", "--serve", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("gateway at"):
                break
        assert f"gateway at http://127.0.0.1:{port}" in line
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [model["id"] for model in models["data"]] == ["all-MiniLM-L6-v2"]
        demo.send_signal(signal.SIGTERM)
        rest = demo.communicate(timeout=120)[0]
    finally:
        demo.kill()
    assert demo.returncode == 0
    assert "supervisor stopped (exit code 0)" in rest
