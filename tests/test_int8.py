"""`embedq model prepare --quantize int8`: a quantized copy, kept only when STS-B says it is good enough."""

import json
import subprocess

import pytest

from embedq.worker.cli import embedq_command
from embedq.worker.model.export import quantize_int8
from embedq.worker.model.spec import ModelError


def test_int8_copy_passes_the_quality_gate_and_reports_both_scores(model_dir, stsb):
    run = subprocess.run(
        [*embedq_command(), "model", "prepare", "--dir", str(model_dir), "--quantize", "int8", "--stsb", str(stsb)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "int8 copy ready" in run.stdout
    quality = json.loads((model_dir.with_name(model_dir.name + "-int8") / "quality.json").read_text())
    scores = quality["stsb_cosine_spearman"]
    print(f"STS-B cosine Spearman: fp32 {scores['fp32']:.2f}, int8 {scores['int8']:.2f}")
    assert abs(scores["fp32"] - 82.03) < 0.01
    assert 0 <= scores["loss"] <= 0.5
    validate = subprocess.run(
        [*embedq_command(), "model", "validate", str(model_dir.with_name(model_dir.name + "-int8"))],
        capture_output=True,
        text=True,
    )
    assert validate.returncode == 0 and "stsb_cosine_spearman" in validate.stdout


def test_a_copy_that_loses_too_much_is_not_saved(model_dir, stsb, tmp_path, monkeypatch):
    monkeypatch.setattr("embedq.worker.model.export.INT8_MAX_LOSS", 0.0)  # any loss at all is too much
    target = tmp_path / "int8"
    with pytest.raises(ModelError, match=r"int8 scores .* it loses .* more than 0.0; not saved"):
        quantize_int8(model_dir, stsb, target)
    assert not target.exists()
    assert not list(tmp_path.glob(".staging-*"))
