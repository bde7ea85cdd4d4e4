"""Execution-provider choice: CoreML on macOS with its options, CUDA, CPU fallback, strict mode."""

import logging

import onnxruntime as ort
import pytest

from embedq.worker.model.encoder import Encoder
from embedq.worker.model.providers import COREML, CPU, CUDA, ProviderUnavailable, choose_providers
from embedq.worker.model.spec import load_spec

ALL = [COREML, CUDA, CPU]


@pytest.mark.unit
def test_auto_on_macos_picks_coreml_with_its_options():
    chosen = choose_providers(["auto"], [COREML, CPU], platform="darwin")
    assert chosen == [
        (
            COREML,
            {
                "MLComputeUnits": "ALL",
                "ModelFormat": "MLProgram",
                "RequireStaticInputShapes": "0",
                "EnableOnSubgraphs": "0",
            },
        ),
        (CPU, {}),
    ]


@pytest.mark.unit
def test_auto_elsewhere_skips_coreml_and_prefers_cuda():
    assert [name for name, _ in choose_providers(["auto"], ALL, platform="linux")] == [CUDA, CPU]


@pytest.mark.unit
def test_auto_on_a_cpu_only_build_is_cpu():
    assert choose_providers(["auto"], [CPU], platform="linux") == [(CPU, {})]


@pytest.mark.unit
def test_explicit_list_is_honoured_in_order_with_aliases():
    chosen = choose_providers(["cpu", "coreml"], ALL, platform="darwin")
    assert [name for name, _ in chosen] == [COREML, CPU]
    assert [name for name, _ in choose_providers(["CUDAExecutionProvider"], ALL)] == [CUDA, CPU]


@pytest.mark.unit
def test_missing_provider_falls_back_to_cpu_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="embedq.worker.model.providers"):
        chosen = choose_providers([COREML], [CPU], platform="linux")
    assert chosen == [(CPU, {})]
    assert "CoreMLExecutionProvider is not available" in caplog.text
    assert "falling back to CPUExecutionProvider" in caplog.text


@pytest.mark.unit
def test_strict_mode_refuses_a_missing_provider():
    with pytest.raises(ProviderUnavailable, match="CoreMLExecutionProvider is not available"):
        choose_providers([COREML], [CPU], strict=True)


def test_a_real_session_asked_for_coreml_here_runs_on_cpu(model_dir):
    assert COREML not in ort.get_available_providers()
    providers = choose_providers([COREML], ort.get_available_providers())
    encoder = Encoder(load_spec(model_dir), providers=providers, threads=1)
    assert encoder.providers == [CPU]
    assert encoder.encode(["still works"]).vectors.shape == (1, 384)
