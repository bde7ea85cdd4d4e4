"""`embedq model validate` and `model info` on a good and on broken model directories."""

import shutil
import subprocess

import onnx
import pytest

from embedq.worker.supervisor.spawn import embedq_command


def embedq(*args, env=None):
    return subprocess.run([*embedq_command(), *args], capture_output=True, text=True, env=env)


@pytest.fixture
def copy_of_model(model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def test_validate_accepts_the_prepared_model_and_lists_its_graph(model_dir):
    run = embedq("model", "validate", str(model_dir))
    assert run.returncode == 0, run.stderr
    assert f"OK {model_dir}" in run.stdout
    for expected in (
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "last_hidden_state",
        "tensor(int64)",
        "tensor(float)",
        "dim 384, max length 256, pooling mean",
    ):
        assert expected in run.stdout


def test_validate_names_a_missing_tokenizer(copy_of_model):
    (copy_of_model / "tokenizer.json").unlink()
    run = embedq("model", "validate", str(copy_of_model))
    assert run.returncode == 1
    assert "tokenizer.json is missing" in run.stderr


def test_validate_names_a_corrupt_graph(copy_of_model):
    (copy_of_model / "model.onnx").write_bytes(b"not an onnx graph")
    run = embedq("model", "validate", str(copy_of_model))
    assert run.returncode == 1
    assert "model.onnx is not a valid ONNX model" in run.stderr


def test_validate_names_missing_external_data(copy_of_model):
    graph = onnx.load(str(copy_of_model / "model.onnx"))
    onnx.save_model(graph, str(copy_of_model / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    assert embedq("model", "validate", str(copy_of_model)).returncode == 0
    (copy_of_model / "model.onnx.data").unlink()
    run = embedq("model", "validate", str(copy_of_model))
    assert run.returncode == 1
    assert "external data that is missing: model.onnx.data" in run.stderr


def test_validate_names_a_missing_directory(tmp_path):
    run = embedq("model", "validate", str(tmp_path / "nowhere"))
    assert run.returncode == 1
    assert "does not exist" in run.stderr


def test_info_prints_model_dimension_tokens_pooling_and_providers(model_dir):
    run = embedq("model", "info", str(model_dir))
    assert run.returncode == 0, run.stderr
    lines = dict(line.split(None, 1) for line in run.stdout.splitlines())
    assert lines["dimension"] == "384"
    assert lines["max_tokens"] == "256"
    assert lines["pooling"] == "mean"
    assert lines["providers"] == "['CPUExecutionProvider']"
