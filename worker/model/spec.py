"""A model directory as users download it from a hub: find its files, read what it says about
itself (dimension, max length, pooling, prompts) and check that it can serve."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedq.errors import EmbedqError

POOLING_MODES = {
    "pooling_mode_lasttoken": "lasttoken",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
}

QUALITY_FILE = "quality.json"  # a quantized copy's precision and the gate's measurements


class ModelError(EmbedqError):
    """The model directory is missing something or holds something unusable; the message says what."""


@dataclass(frozen=True)
class ModelSpec:
    directory: Path
    onnx_path: Path
    tokenizer_path: Path
    name: str
    dim: int
    max_length: int
    pooling: str
    prompts: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"  # "int8" for a copy `embedq model prepare --quantize int8` made
    kv_heads: int = 0  # decoder models: key/value heads and head size, for an empty KV cache
    head_dim: int = 0


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    except (OSError, ValueError) as error:
        raise ModelError(f"{path} is not readable JSON: {error}") from None


def find_onnx(directory: Path) -> Path:
    """model.onnx at the top, else the first onnx/model*.onnx (hub exports keep variants there)."""
    candidates = [
        directory / "model.onnx",
        directory / "onnx" / "model.onnx",
        *sorted((directory / "onnx").glob("model*.onnx")),
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ModelError(f"no model.onnx or onnx/model*.onnx in {directory}; run `embedq model prepare`")


def read_pooling(directory: Path) -> str:
    config = _read_json(directory / "1_Pooling" / "config.json")
    for key, mode in POOLING_MODES.items():
        if config.get(key):
            return mode
    return "mean"


def load_spec(directory: Path | str) -> ModelSpec:
    """Read a model directory; ModelError names the first thing that is missing or wrong."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ModelError(f"model directory {directory} does not exist; run `embedq model prepare`")
    onnx_path = find_onnx(directory)
    tokenizer_path = directory / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ModelError(f"{tokenizer_path} is missing: embedq needs the fast-tokenizer file")
    config = _read_json(directory / "config.json")
    pooling_config = _read_json(directory / "1_Pooling" / "config.json")
    dim = pooling_config.get("word_embedding_dimension") or config.get("hidden_size")
    if not isinstance(dim, int) or dim < 1:
        raise ModelError(f"cannot tell the embedding dimension: no hidden_size in {directory / 'config.json'}")
    max_length = (
        _read_json(directory / "sentence_bert_config.json").get("max_seq_length")
        or config.get("max_position_embeddings")
        or _read_json(directory / "tokenizer_config.json").get("model_max_length")
    )
    if not isinstance(max_length, int) or max_length < 1:
        raise ModelError(f"cannot tell the maximum sequence length of {directory}")
    prompts = _read_json(directory / "config_sentence_transformers.json").get("prompts") or {}
    # A quantized copy's vectors differ from the model's, so its precision is part of its name wherever
    # the directory is moved or renamed: results, worker facts and `embedq stats` never mix the two.
    precision = str(_read_json(directory / QUALITY_FILE).get("precision", "fp32"))
    name = directory.name
    if precision != "fp32" and not name.endswith(f"-{precision}"):
        name = f"{name}-{precision}"
    heads = config.get("num_attention_heads") or 0
    return ModelSpec(
        directory=directory,
        onnx_path=onnx_path,
        tokenizer_path=tokenizer_path,
        name=name,
        precision=precision,
        dim=dim,
        max_length=max_length,
        pooling=read_pooling(directory),
        prompts={str(k): str(v) for k, v in prompts.items()},
        kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or (config.get("hidden_size", 0) // heads if heads else 0),
    )


def missing_external_data(onnx_path: Path) -> list[str]:
    """External-data files the graph names that are not beside it (checked with `onnx` when installed)."""
    try:
        import onnx
        from onnx.external_data_helper import uses_external_data
    except ImportError:
        return []
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as error:
        raise ModelError(f"{onnx_path} is not a valid ONNX model: {error}") from None
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(name for name in locations if not (onnx_path.parent / name).is_file())


def validate(directory: Path | str) -> dict[str, Any]:
    """Load the model for real and describe it; ModelError with the reason when it cannot serve."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    spec = load_spec(directory)
    missing = missing_external_data(spec.onnx_path)
    if missing:
        raise ModelError(f"{spec.onnx_path.name} refers to external data that is missing: {', '.join(missing)}")
    try:
        Tokenizer.from_file(str(spec.tokenizer_path))
    except Exception as error:
        raise ModelError(f"{spec.tokenizer_path} does not load: {error}") from None
    try:
        session = ort.InferenceSession(str(spec.onnx_path), providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ModelError(f"{spec.onnx_path} does not load in onnxruntime: {error}") from None
    inputs = [(i.name, i.shape, i.type) for i in session.get_inputs()]
    outputs = [(o.name, o.shape, o.type) for o in session.get_outputs()]
    names = {name for name, _, _ in inputs}
    if "input_ids" not in names:
        raise ModelError(f"the graph takes no input_ids (it takes {sorted(names)})")
    if not {"last_hidden_state", "sentence_embedding", "token_embeddings"} & {name for name, _, _ in outputs}:
        raise ModelError(
            f"the graph has no last_hidden_state or sentence_embedding output (it has {[o[0] for o in outputs]})"
        )
    return {"spec": spec, "inputs": inputs, "outputs": outputs, "quality": _read_json(spec.directory / QUALITY_FILE)}
