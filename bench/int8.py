"""Which int8 copy of the default model keeps its vectors, and how fast it is: each quantization
recipe is judged the way `embedq model prepare --quantize int8` judges the copy it ships (calibrated
on one half of the STS-B test sentences, fixed seed, measured on the other: per-text cosine to fp32,
top-10 neighbour overlap of 200 queries, STS-B on the held-out pairs), and timed beside fp32 through
the Encoder in length-sorted batches of 32 on 1 and 2 threads, alternating. The CPU's flags are
recorded beside the figures: int8 speed depends on VNNI. Results go to bench/results/int8.json.

    ./dev bench int8 [--repeats 3] [--stsb PATH]"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from benchlib import alternate, rate, save, stsb_path

from embedq.config import Settings
from embedq.worker.model.encoder import Encoder
from embedq.worker.model.export import copy_model_files, default_source, prepare_default
from embedq.worker.model.quality import StsbSplit, agreement, cosine_spearman, split_stsb
from embedq.worker.model.quantize import GOALS, STSB_MAX_LOSS, Int8Recipe, build_int8, has_vnni


def naive(fp32_dir: Path, split: StsbSplit, target: Path) -> None:
    """embedq 0.2's copy: ONNX Runtime's quantize_dynamic defaults, per-tensor, every supported op."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    copy_model_files(fp32_dir, target)
    quantize_dynamic(str(fp32_dir / "model.onnx"), str(target / "model.onnx"), weight_type=QuantType.QInt8)


def static_qdq(fp32_dir: Path, split: StsbSplit, target: Path) -> None:
    """Static QDQ: per-channel weights, activation ranges calibrated (min/max) on the calibration half."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(fp32_dir / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.enable_padding()

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter(split.calibration[i : i + 32] for i in range(0, len(split.calibration), 32))

        def get_next(self) -> dict[str, np.ndarray] | None:
            texts = next(self.batches, None)
            if texts is None:
                return None
            encodings = tokenizer.encode_batch(texts)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    copy_model_files(fp32_dir, target)
    quantize_static(
        str(fp32_dir / "model.onnx"),
        str(target / "model.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=not has_vnni(),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
    )


def recipe(chosen: Int8Recipe) -> Callable[[Path, StsbSplit, Path], None]:
    def make(fp32_dir: Path, split: StsbSplit, target: Path) -> None:
        build_int8(default_source(), fp32_dir, split, target, chosen)

    return make


VARIANTS: dict[str, Callable[[Path, StsbSplit, Path], None]] = {
    "per-tensor, every op (embedq 0.2)": naive,
    "static QDQ, per-channel, calibrated": static_qdq,
    "per-channel": recipe(Int8Recipe(smoothing=None, max_fp32_layers=0)),
    "per-channel, sensitive layers fp32": recipe(Int8Recipe(smoothing=None)),
    "smoothed, per-channel": recipe(Int8Recipe(max_fp32_layers=0)),
    "smoothed, per-channel, sensitive layers fp32 (ships)": recipe(Int8Recipe()),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stsb", type=Path, help="STS Benchmark test file (default: EMBEDQ_STSB or ../shared)")
    args = parser.parse_args()
    fp32_dir = prepare_default(Settings.load().model_dir)
    split = split_stsb(stsb_path(args.stsb))
    texts = sorted(split.evaluation, key=len)
    batches = [texts[i : i + 32] for i in range(0, len(texts), 32)]
    row = {text: index for index, text in enumerate(texts)}
    first, second = [row[t] for t in split.first], [row[t] for t in split.second]
    fp32 = Encoder.from_settings(Settings(model_dir=fp32_dir, workers=1))
    reference = fp32.encode(texts).vectors
    stsb_fp32 = cosine_spearman(reference[first], reference[second], split.gold)
    rows: list[dict[str, object]] = []
    fp32_rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as root:
        directories = {}
        for label, make in VARIANTS.items():
            directories[label] = Path(root) / str(len(directories))
            directories[label].mkdir()
            make(fp32_dir, split, directories[label])
            vectors = Encoder.from_settings(Settings(model_dir=directories[label], workers=1)).encode(texts).vectors
            measured = {
                **agreement(reference, vectors),
                "stsb": cosine_spearman(vectors[first], vectors[second], split.gold),
            }
            measured["meets_goals"] = float(
                all(measured[name] >= goal for name, goal in GOALS.items())
                and stsb_fp32 - measured["stsb"] <= STSB_MAX_LOSS
            )
            rows.append({"variant": label, **measured})
            print(f"{label}: " + ", ".join(f"{k} {v:.4f}" for k, v in measured.items()), flush=True)
        for threads in (1, 2):
            encoders = {
                label: Encoder.from_settings(Settings(model_dir=d, workers=1, intra_op_threads=threads))
                for label, d in {"fp32": fp32_dir, **directories}.items()
            }
            samples = alternate(
                {
                    label: rate(len(texts), lambda e=encoder: [e.encode(batch) for batch in batches])
                    for label, encoder in encoders.items()
                },
                args.repeats,
            )
            base = statistics.median(samples["fp32"])
            for entry in rows:
                entry[f"batch32_{threads}t"] = statistics.median(samples[entry["variant"]])
                entry[f"speedup_{threads}t"] = entry[f"batch32_{threads}t"] / base
            print(
                f"{threads} thread(s): fp32 {base:.0f}/s; "
                + ", ".join(f"{entry['variant']} {entry[f'speedup_{threads}t']:.2f}x" for entry in rows),
                flush=True,
            )
            fp32_rates[f"fp32_batch32_{threads}t"] = base
    save(
        "int8",
        {
            "evaluation_texts": len(texts),
            "evaluation_pairs": len(split.gold),
            "stsb_fp32": stsb_fp32,
            "goals": {**GOALS, "stsb_max_loss": STSB_MAX_LOSS, "speedup": 1.5},
            "variants": rows,
            **fp32_rates,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
