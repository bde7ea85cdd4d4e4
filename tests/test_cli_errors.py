"""A user's mistake on the command line is one line on stderr and a non-zero exit, never a traceback."""

import os
import shutil
import subprocess

import pytest

from embedq.local.redis_server import free_port
from embedq.worker.supervisor.spawn import embedq_command


def run_embedq(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("EMBEDQ_")}
    return subprocess.run(
        [*embedq_command(), *args], capture_output=True, text=True, timeout=120, env={**environment, **env}
    )


def assert_one_line(run: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    assert len(lines) == 1, run.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def corrupt_model(model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    (target / "model.onnx").write_bytes(b"not an onnx graph")
    return target


def test_worker_with_a_missing_model_directory(tmp_path):
    run = run_embedq("worker", EMBEDQ_MODEL_DIR=str(tmp_path / "nowhere"))
    assert_one_line(
        run, 1, "ModelError", f"model directory {tmp_path / 'nowhere'} does not exist", "run `embedq model prepare`"
    )


def test_worker_with_a_corrupt_model_onnx(corrupt_model):
    run = run_embedq("worker", EMBEDQ_MODEL_DIR=str(corrupt_model))
    assert_one_line(
        run, 1, "ModelError", f"{corrupt_model / 'model.onnx'} does not load in onnxruntime", "embedq model validate"
    )


def test_supervise_refuses_a_missing_model_before_starting_any_worker(tmp_path):
    run = run_embedq("supervise", EMBEDQ_MODEL_DIR=str(tmp_path / "nowhere"))
    assert_one_line(run, 1, "ModelError", "does not exist")


def test_supervise_with_an_unknown_provider_in_strict_mode(model_dir):
    run = run_embedq(
        "supervise",
        EMBEDQ_MODEL_DIR=str(model_dir),
        EMBEDQ_PROVIDERS="CUDAExecutionProvider",
        EMBEDQ_STRICT_PROVIDERS="true",
    )
    assert_one_line(run, 1, "ProviderUnavailable", "CUDAExecutionProvider is not available", "EMBEDQ_STRICT_PROVIDERS")


def test_model_info_with_a_missing_directory(tmp_path):
    assert_one_line(run_embedq("model", "info", str(tmp_path / "nowhere")), 1, "ModelError", "does not exist")


def test_embed_with_redis_unreachable():
    run = run_embedq("embed", "hello", EMBEDQ_REDIS_URL=f"redis://:pw-secret@127.0.0.1:{free_port()}/0")
    assert_one_line(run, 1, "QueueUnavailable", "did not answer", "***")
    assert "pw-secret" not in run.stderr


@pytest.mark.parametrize("dimensions", ["0", "-4"])
def test_embed_with_bad_dimensions(dimensions):
    run = run_embedq("embed", "--dimensions", dimensions, "hello")
    assert_one_line(run, 1, "InvalidInput", f"dimensions must be a positive int or None, got {dimensions}")


def test_stats_with_an_invalid_setting():
    assert_one_line(run_embedq("stats", EMBEDQ_MAX_TEXTS_PER_JOB="0"), 2, "InvalidSettings", "EMBEDQ_MAX_TEXTS_PER_JOB")


def test_int8_without_an_sts_benchmark_file(model_dir):
    run = run_embedq("model", "prepare", "--dir", str(model_dir), "--quantize", "int8")
    assert_one_line(run, 2, "InvalidSettings", "--stsb PATH or set EMBEDQ_STSB")
