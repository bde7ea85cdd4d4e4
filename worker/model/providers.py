"""Which ONNX Runtime execution providers a session gets: CoreML on macOS, CUDA, else CPU."""

from __future__ import annotations

import logging
import sys
from typing import Any

from embedq.errors import EmbedqError

log = logging.getLogger(__name__)

COREML = "CoreMLExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# MLProgram with dynamic shapes: texts vary in length, and static shapes would force one compile per shape.
COREML_OPTIONS = {
    "MLComputeUnits": "ALL",
    "ModelFormat": "MLProgram",
    "RequireStaticInputShapes": "0",
    "EnableOnSubgraphs": "0",
}
PROVIDER_OPTIONS: dict[str, dict[str, str]] = {COREML: COREML_OPTIONS, CUDA: {}, CPU: {}}
ALIASES = {"coreml": COREML, "cuda": CUDA, "cpu": CPU}

ProviderList = list[tuple[str, dict[str, Any]]]


class ProviderUnavailable(EmbedqError):
    """A requested execution provider is not offered by this onnxruntime build (strict mode)."""


def choose_providers(
    requested: tuple[str, ...] | list[str],
    available: list[str],
    *,
    platform: str = sys.platform,
    strict: bool = False,
) -> ProviderList:
    """The providers to pass to InferenceSession, most preferred first, CPU always last."""
    if list(requested) == ["auto"]:
        wanted = [COREML] if platform == "darwin" else []
        wanted.append(CUDA)
        names = [name for name in wanted if name in available]
    else:
        names = []
        for raw in requested:
            name = ALIASES.get(raw.lower(), raw)
            if name in available:
                names.append(name)
                continue
            message = (
                f"execution provider {name} is not available in this onnxruntime (it offers {', '.join(available)})"
            )
            if strict:
                raise ProviderUnavailable(
                    f"{message}; install an onnxruntime build with it, or unset EMBEDQ_STRICT_PROVIDERS"
                )
            log.warning("%s; falling back to %s", message, CPU)
    names = [name for name in dict.fromkeys(names) if name != CPU] + [CPU]
    return [(name, dict(PROVIDER_OPTIONS.get(name, {}))) for name in names]
