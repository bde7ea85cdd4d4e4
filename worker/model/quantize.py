"""`embedq model prepare --quantize int8`: an int8 copy that keeps the model's vectors, or none.

The recipe (bench/int8.py measures it against the alternatives): activation outliers are moved into
the weights first (SmoothQuant: each linear layer's input is divided, per channel, by a scale its
weights take on, with activation maxima read from calibration text), then every weighted MatMul is
quantized dynamically with per-channel int8 weights, and the layers whose quantization moves the
vectors most, measured one by one, stay in fp32 until the calibration text meets the goals. The copy
is then judged on text it has never seen (the other half of STS-B), and kept only if it meets them."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from embedq.config import Settings
from embedq.worker.model.encoder import Encoder
from embedq.worker.model.export import copy_model_files, export_graph, load_checkpoint
from embedq.worker.model.quality import (
    HELD_OUT_SEED,
    SPLIT_SEED,
    StsbSplit,
    agreement,
    cosine_spearman,
    split_stsb,
)
from embedq.worker.model.spec import QUALITY_FILE, ModelError

log = logging.getLogger(__name__)

# What retrieval needs of an int8 copy against its fp32 model, on text the copy was not calibrated on.
GOALS = {"cosine_p1": 0.99, "cosine_median": 0.995, "neighbour_overlap": 0.95}
# The layer search stops when the calibration half clears the goals by this much, so that the held-out
# half (the judge) meets them too (measured: a copy that just met them on calibration missed on held-out).
SEARCH_MARGIN = {"cosine_p1": 0.003, "cosine_median": 0.002, "neighbour_overlap": 0.01}
STSB_MAX_LOSS = 0.13  # STS-B cosine Spearman points below fp32 on the same pairs (82.03 -> 81.9)
SENSITIVITY_TEXTS = 256  # calibration texts each layer's sensitivity is measured on


KeptAs = Literal["fp32", "uint8"]  # how a sensitive layer is kept out of signed int8


@dataclass(frozen=True)
class Int8Recipe:
    """How the copy is made. The defaults are what ships; bench/int8.py varies them."""

    per_channel: bool = True
    smoothing: float | None = 0.85  # SmoothQuant's alpha (share of the outliers moved into the weights)
    max_fp32_layers: int = 6  # sensitive layers that may stay in fp32 (each costs speed)
    max_uint8_layers: int = 12  # or that get unsigned 8-bit weights (sensitive_as="uint8")
    reduce_range: bool | None = None  # 7-bit weights; None: as the CPU needs (ONNX Runtime: without VNNI)
    # How sensitive layers are kept: "fp32", or "uint8": unsigned 8-bit weights, which ONNX Runtime's kernels
    # multiply without saturating on a CPU without VNNI (where signed weights must drop to 7 bits). fp32 ships:
    # on AVX2 alone (bench/int8.py) uint8 layers were no faster beyond the machine's noise, with less margin.
    sensitive_as: KeptAs = "fp32"

    def resolved(self) -> Int8Recipe:
        """The recipe with what the CPU decides filled in."""
        return replace(self, reduce_range=self.reduce_range if self.reduce_range is not None else not has_vnni())

    @property
    def max_sensitive_layers(self) -> int:
        return self.max_fp32_layers if self.sensitive_as == "fp32" else self.max_uint8_layers


@dataclass
class Int8Report:
    recipe: dict[str, Any]
    sensitive_layers: list[str] = field(default_factory=list)  # kept as the recipe's `sensitive_as` says
    calibration: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)  # the whole held-out half, and STS-B on it
    held_out: dict[str, dict[str, float]] = field(default_factory=dict)  # per disjoint split of that half

    def misses(self) -> list[str]:
        """The goals either held-out split misses, each with its split, measure and limit."""
        measured = self.evaluation
        missed = [
            f"{name} {splits[name]:.4f} < {goal} on held-out split {split}"
            for split, splits in self.held_out.items()
            for name, goal in GOALS.items()
            if splits[name] < goal
        ]
        if measured["stsb_loss"] > STSB_MAX_LOSS:
            missed.append(f"STS-B loss {measured['stsb_loss']:.2f} > {STSB_MAX_LOSS}")
        return missed

    def summary(self) -> str:
        e = self.evaluation
        return (
            f"cosine to fp32 p1 {e['cosine_p1']:.4f} (median {e['cosine_median']:.4f}, min {e['cosine_min']:.4f}), "
            f"top-10 neighbour overlap {e['neighbour_overlap']:.3f}, STS-B {e['stsb_int8']:.2f} vs fp32 "
            f"{e['stsb_fp32']:.2f} on the {int(e['stsb_pairs'])} held-out pairs; on its disjoint splits "
            + ", ".join(
                f"{name}: p1 {split['cosine_p1']:.4f}, overlap {split['neighbour_overlap']:.3f}"
                for name, split in self.held_out.items()
            )
        )


def int8_dir(source: Path) -> Path:
    return source.with_name(source.name + "-int8")


def simd_flags() -> list[str]:
    """The CPU's AVX/VNNI flags (int8 speed and ONNX Runtime's reduce_range advice depend on them)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return sorted(flag for flag in flags if flag.startswith(("avx", "fma")) or "vnni" in flag or flag == "amx_int8")


def has_vnni() -> bool:
    return any("vnni" in flag for flag in simd_flags())


def cpu_kind_warning(model_dir: Path) -> str | None:
    """What to tell an operator whose int8 copy was prepared on a CPU of the other kind (VNNI or not), or
    None. Its weights' range was chosen for that kind: a copy made on VNNI uses 8-bit weights, whose int8
    products saturate on a CPU without it (the vectors drift past the goals it was judged on); one made
    without VNNI uses 7-bit weights, and on VNNI runs slower than a copy made there."""
    try:
        quality = json.loads((model_dir / QUALITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    flags = quality.get("cpu_flags") if isinstance(quality, dict) else None
    if quality.get("precision") != "int8" or not isinstance(flags, list) or not flags:
        return None
    prepared_with, here = any("vnni" in str(flag) for flag in flags), has_vnni()
    if prepared_with == here:
        return None
    fp32_dir = model_dir.with_name(model_dir.name.removesuffix("-int8"))
    effect = (
        "its 8-bit weights saturate in this CPU's int8 products, so its vectors drift past the goals it was judged on"
        if prepared_with
        else "its 7-bit weights keep the vectors but leave speed this CPU's VNNI could add"
    )
    return (
        f"the int8 copy in {model_dir} was prepared on a CPU {'with' if prepared_with else 'without'} VNNI and this "
        f"one has {'none' if prepared_with else 'it'}: {effect}. Prepare a copy on this kind of CPU: embedq model "
        f"prepare --dir {fp32_dir} --quantize int8 --stsb PATH"
    )


def smooth(model: Any, tokenizer: Any, texts: list[str], alpha: float) -> None:
    """SmoothQuant, in place: for each group of linear layers reading the same input, scale s per input
    channel = max|x|^alpha / max|w|^(1-alpha); the input is divided by s, the weights multiplied by it,
    so the model computes the same function with activations that quantize with less error."""
    import torch

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    maxima: dict[int, torch.Tensor] = {}
    groups: dict[int, list[torch.nn.Linear]] = {}
    inputs_seen: list[torch.Tensor] = []  # held through the first batch, so no address is reused

    def observe(layer: torch.nn.Linear, inputs: tuple[torch.Tensor, ...], _: object) -> None:
        x = inputs[0].detach()
        if not any(layer in members for members in groups.values()):
            inputs_seen.append(x)
            groups.setdefault(x.data_ptr(), []).append(layer)  # layers fed the same tensor share a scale
        seen = x.abs().reshape(-1, x.shape[-1]).amax(0)
        maxima[id(layer)] = torch.maximum(maxima.get(id(layer), seen), seen)

    hooks = [layer.register_forward_hook(observe) for layer in linears]
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            model(**tokenizer(texts[start : start + 32], padding=True, truncation=True, return_tensors="pt"))
            inputs_seen.clear()
    for hook in hooks:
        hook.remove()

    class Smoothed(torch.nn.Module):
        inverse: torch.Tensor

        def __init__(self, linear: torch.nn.Linear, inverse: torch.Tensor) -> None:
            super().__init__()
            self.linear = linear
            self.register_buffer("inverse", inverse)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x * self.inverse)  # type: ignore[no-any-return]

    parents = {id(child): (parent, name) for parent in model.modules() for name, child in parent.named_children()}
    with torch.no_grad():
        for members in groups.values():
            activation = torch.stack([maxima[id(m)] for m in members]).amax(0).clamp(min=1e-5)
            weight = torch.stack([m.weight.abs().amax(0) for m in members]).amax(0).clamp(min=1e-5)
            scale = (activation**alpha / weight ** (1 - alpha)).clamp(min=1e-5)
            for member in members:
                member.weight.mul_(scale)
                parent, name = parents[id(member)]
                setattr(parent, name, Smoothed(member, 1 / scale))


def weighted_matmuls(path: Path) -> list[str]:
    """The MatMul nodes whose second input is a weight (not attention's activation x activation)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {tensor.name for tensor in graph.initializer}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]


class Candidates:
    """Quantized candidates of one fp32 graph, embedded in a scratch model directory with the Encoder
    a worker uses, against the fp32 model's vectors."""

    def __init__(self, fp32_dir: Path, graph: Path, scratch: Path, recipe: Int8Recipe) -> None:
        self.graph, self.scratch, self.recipe = graph, scratch, recipe.resolved()
        self.fp32 = Encoder.from_settings(Settings(model_dir=fp32_dir, workers=1))
        copy_model_files(fp32_dir, scratch)

    def quantize(self, kept: list[str], path: Path, kept_as: KeptAs | None = None) -> None:
        """Every weighted MatMul with signed int8 weights, but `kept`: in fp32, or with unsigned 8-bit weights
        (`kept_as`, by default the recipe's `sensitive_as`)."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        common: dict[str, Any] = {"per_channel": self.recipe.per_channel, "op_types_to_quantize": ["MatMul"]}
        signed = (
            path.with_name(path.name + ".signed") if kept and (kept_as or self.recipe.sensitive_as) == "uint8" else path
        )
        logging.disable(logging.WARNING)  # the quantizer logs every node it skips, and advice, to the root logger
        try:
            quantize_dynamic(
                str(self.graph),
                str(signed),
                weight_type=QuantType.QInt8,
                reduce_range=self.recipe.reduce_range,
                nodes_to_exclude=kept,
                **common,
            )
            if signed != path:
                quantize_dynamic(str(signed), str(path), weight_type=QuantType.QUInt8, nodes_to_quantize=kept, **common)
                signed.unlink()
        finally:
            logging.disable(logging.NOTSET)

    def encoder(self, kept: list[str], kept_as: KeptAs | None = None) -> Encoder:
        self.quantize(kept, self.scratch / "model.onnx", kept_as)
        return Encoder.from_settings(Settings(model_dir=self.scratch, workers=1))

    def measure(self, kept: list[str], texts: list[str]) -> dict[str, float]:
        return agreement(self.fp32.encode(texts).vectors, self.encoder(kept).encode(texts).vectors)


def clears(measured: dict[str, float]) -> bool:
    return all(measured[name] >= goal + SEARCH_MARGIN[name] for name, goal in GOALS.items())


def choose_sensitive_layers(
    candidates: Candidates, layers: list[str], texts: list[str]
) -> tuple[list[str], dict[str, float]]:
    """Quantize everything; while the calibration text misses the goals, keep the next most sensitive
    layer (measured alone: mean cosine lost when only it is quantized) out of signed int8: in fp32, or
    with unsigned 8-bit weights, as the recipe says."""
    measured = candidates.measure([], texts)
    if clears(measured) or not candidates.recipe.max_sensitive_layers:
        return [], measured
    sample = texts[:SENSITIVITY_TEXTS]
    reference = candidates.fp32.encode(sample).vectors
    loss: dict[str, float] = {}
    for number, layer in enumerate(layers, 1):
        vectors = candidates.encoder([other for other in layers if other != layer], "fp32").encode(sample).vectors
        loss[layer] = float(1 - (vectors * reference).sum(axis=1).mean())
        log.info("int8: sensitivity of layer %d/%d %s: %.2e", number, len(layers), layer, loss[layer])
    ranked = sorted(layers, key=loss.__getitem__, reverse=True)
    kept: list[str] = []
    for layer in ranked[: candidates.recipe.max_sensitive_layers]:
        kept.append(layer)
        measured = candidates.measure(kept, texts)
        log.info("int8: %d layers in %s: calibration %s", len(kept), candidates.recipe.sensitive_as, _brief(measured))
        if clears(measured):
            break
    return kept, measured


def _brief(measured: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in measured.items())


def build_int8(
    checkpoint: Path,
    fp32_dir: Path,
    split: StsbSplit,
    target: Path,
    recipe: Int8Recipe = Int8Recipe(),
    progress: Callable[[str], None] = log.info,
) -> Int8Report:
    """Make `target` an int8 model directory of `checkpoint` (exported as `fp32_dir` was) and measure
    it against `fp32_dir` on the evaluation half of `split`; no gate here."""
    from transformers import AutoTokenizer

    report = Int8Report(recipe=asdict(recipe.resolved()))
    with tempfile.TemporaryDirectory(prefix="embedq-int8-") as scratch:
        graph = Path(scratch) / "fp32.onnx"
        model = load_checkpoint(checkpoint)
        if recipe.smoothing is not None:
            progress(
                f"int8: smoothing activation outliers (alpha {recipe.smoothing}) on {len(split.calibration)} texts"
            )
            smooth(model, AutoTokenizer.from_pretrained(str(checkpoint)), split.calibration, recipe.smoothing)
        export_graph(model, graph)
        (Path(scratch) / "candidate").mkdir()
        candidates = Candidates(fp32_dir, graph, Path(scratch) / "candidate", recipe)
        progress(
            f"int8: quantizing; finding the layers to keep in {candidates.recipe.sensitive_as} on the calibration half"
        )
        report.sensitive_layers, report.calibration = choose_sensitive_layers(
            candidates, weighted_matmuls(graph), split.calibration
        )
        copy_model_files(fp32_dir, target)
        candidates.quantize(report.sensitive_layers, target / "model.onnx")
        progress(f"int8: judging the copy on the {len(split.evaluation)} held-out texts")
        reference = candidates.fp32.encode(split.evaluation).vectors
    vectors = Encoder.from_settings(Settings(model_dir=target, workers=1)).encode(split.evaluation).vectors
    row = {text: index for index, text in enumerate(split.evaluation)}
    first, second = [row[t] for t in split.first], [row[t] for t in split.second]
    stsb = {
        "stsb_fp32": cosine_spearman(reference[first], reference[second], split.gold),
        "stsb_int8": cosine_spearman(vectors[first], vectors[second], split.gold),
        "stsb_pairs": float(len(split.gold)),
    }
    report.evaluation = {**agreement(reference, vectors), **stsb, "stsb_loss": stsb["stsb_fp32"] - stsb["stsb_int8"]}
    report.held_out = {
        name: agreement(reference[rows], vectors[rows]) for name, rows in split.held_out_splits().items()
    }
    return report


def quantize_int8(
    checkpoint: Path, fp32_dir: Path, stsb: Path, target: Path | None = None, recipe: Int8Recipe = Int8Recipe()
) -> Int8Report:
    """Write an int8 copy of the fp32 model directory `fp32_dir` beside it (`<name>-int8`), kept only
    if it meets GOALS and STSB_MAX_LOSS on the held-out half of STS-B; ModelError saying what it missed
    otherwise, and nothing saved. Its quality.json records the recipe and every measure."""
    target = target or int8_dir(fp32_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    staging.chmod(0o755)
    try:
        report = build_int8(checkpoint, fp32_dir, split_stsb(stsb), staging, recipe)
        missed = report.misses()
        if missed:
            raise ModelError(f"the int8 copy misses {'; '.join(missed)} ({report.summary()}); not saved")
        quality = {
            "precision": "int8",
            "recipe": report.recipe,
            "sensitive_layers": report.sensitive_layers,
            "goals": {**GOALS, "stsb_max_loss": STSB_MAX_LOSS},
            "evaluation": report.evaluation,
            "held_out": report.held_out,
            "judged_on": (
                f"the STS-B test sentences not used for calibration (the half left by seed {SPLIT_SEED}), and each "
                f"of its two disjoint splits (seed {HELD_OUT_SEED}): every goal is met on both"
            ),
            "cpu_flags": simd_flags(),
        }
        (staging / QUALITY_FILE).write_text(json.dumps(quality, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report
