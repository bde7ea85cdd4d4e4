"""`embedq model prepare`'s fp32 export: the fast graph ships, it installs with the pinned CPU torch,
and a cached export is replaced only when an older embedq made it."""

import json
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import onnx

from embedq.worker.model.export import EXPORT_FILE, export_record, prepare_default

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_graph_is_plain_attention_not_the_decomposed_sdpa(model_dir):
    graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False).graph
    operators = {node.op_type for node in graph.node}
    assert json.loads((model_dir / EXPORT_FILE).read_text()) == export_record()
    assert export_record()["exporter"] == "torchscript"
    assert "Softmax" in operators and "IsNaN" not in operators  # the dynamo/sdpa graph guards Softmax with IsNaN


def test_the_exporter_runs_on_the_pinned_cpu_torch_without_onnxscript(tmp_path):
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["export"]
    assert "torch==2.13.0" in extra  # any other spec pulls a multi-GB CUDA build on this machine
    assert not any(requirement.startswith("onnxscript") for requirement in extra)
    assert version("torch").startswith("2.13.0")
    script = (
        "import sys; from pathlib import Path; "
        "from embedq.worker.model.export import default_source, export_graph, load_checkpoint; "
        f"export_graph(load_checkpoint(default_source()), Path({str(tmp_path / 'model.onnx')!r})); "
        "assert 'onnxscript' not in sys.modules, 'the shipped exporter must not need onnxscript'"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "model.onnx").stat().st_size > 80_000_000


def test_an_older_embedq_export_is_replaced_and_a_foreign_model_directory_left_alone(model_dir, tmp_path):
    older = tmp_path / "older"
    shutil.copytree(model_dir, older)
    (older / EXPORT_FILE).write_text(json.dumps({"exporter": "dynamo", "attention": "sdpa", "opset": 18}))
    (older / "model.onnx").write_bytes(b"an older graph")
    prepare_default(older)
    assert json.loads((older / EXPORT_FILE).read_text()) == export_record()
    assert (older / "model.onnx").stat().st_size > 80_000_000

    foreign = tmp_path / "foreign"
    shutil.copytree(model_dir, foreign)
    (foreign / EXPORT_FILE).unlink()
    (foreign / "model.onnx").write_bytes(b"the user's own graph")
    prepare_default(foreign)
    assert (foreign / "model.onnx").read_bytes() == b"the user's own graph"
