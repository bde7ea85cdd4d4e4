"""Which ONNX graph of the default model is fastest: each export candidate (exporter x attention
implementation, and ONNX Runtime's offline transformer fusion) embeds the STS-B test sentences through
embedq's Encoder, length-sorted batches of 32 on 1 and 2 threads and single texts, alternating, and
its vectors are compared with sentence-transformers'. `embedq model prepare` ships the fastest.
Results go to bench/results/export.json (then `./dev bench report`).

    ./dev bench export [--repeats 3] [--stsb PATH]"""

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
from embedq.worker.model.export import (
    SHIPPED_ATTENTION,
    SHIPPED_EXPORTER,
    copy_model_files,
    default_source,
    export_graph,
    load_checkpoint,
)
from embedq.worker.model.quality import load_stsb

# (label, exporter, attention, ONNX Runtime transformer fusion)
CANDIDATES = (
    ("dynamo, sdpa (embedq 0.2)", "dynamo", "sdpa", False),
    ("dynamo, eager", "dynamo", "eager", False),
    ("torchscript, sdpa", "torchscript", "sdpa", False),
    ("torchscript, eager", "torchscript", "eager", False),
    ("torchscript, eager, fused Attention + EmbedLayerNorm", "torchscript", "eager", True),
)


def fuse(path: Path) -> None:
    """ONNX Runtime's offline BERT fusion (what optimum's O2+ levels apply), in place."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(path), model_type="bert", num_heads=12, hidden_size=384, opt_level=0).save_model_to_file(
        str(path)
    )


def build(root: Path, source: Path, exporter: str, attention: str, fused: bool) -> Path:
    directory = Path(tempfile.mkdtemp(dir=root))
    copy_model_files(source, directory)
    export_graph(load_checkpoint(source, attention), directory / "model.onnx", exporter=exporter)
    if fused:
        fuse(directory / "model.onnx")
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stsb", type=Path, help="STS Benchmark test file (default: EMBEDQ_STSB or ../shared)")
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    first, second, _ = load_stsb(stsb_path(args.stsb))
    sentences = sorted(dict.fromkeys(first + second), key=len)
    batches = [sentences[i : i + 32] for i in range(0, len(sentences), 32)]
    singles = sentences[::10]
    source = default_source()
    reference = SentenceTransformer(str(source), device="cpu").encode(sentences, normalize_embeddings=True)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        directories = [
            build(Path(root), source, exporter, attention, fused) for _, exporter, attention, fused in CANDIDATES
        ]
        for (label, exporter, attention, _), directory in zip(CANDIDATES, directories):
            encoder = Encoder.from_settings(Settings(model_dir=directory, workers=1, intra_op_threads=2))
            vectors = np.concatenate([encoder.encode(batch).vectors for batch in batches])
            rows.append(
                {
                    "candidate": label,
                    "ships": (exporter, attention) == (SHIPPED_EXPORTER, SHIPPED_ATTENTION) and "fused" not in label,
                    "cosine_to_sentence_transformers_min": float((vectors * reference).sum(axis=1).min()),
                }
            )
        measures: dict[str, Callable[[Encoder], Callable[[], float]]] = {
            "batch32": lambda e: rate(len(sentences), lambda: [e.encode(batch) for batch in batches]),
            "single": lambda e: rate(len(singles), lambda: [e.encode([text]) for text in singles]),
        }
        for threads in (1, 2):
            encoders = [
                Encoder.from_settings(Settings(model_dir=d, workers=1, intra_op_threads=threads)) for d in directories
            ]
            for measure, make in measures.items():
                if measure == "single" and threads == 1:
                    continue
                key = f"{measure}_{threads}t"
                samples = alternate({index: make(encoder) for index, encoder in enumerate(encoders)}, args.repeats)
                for index, row in enumerate(rows):
                    row[key] = statistics.median(samples[index])
                print(f"{key}: " + ", ".join(f"{row['candidate']} {row[key]:.0f}/s" for row in rows), flush=True)
    baseline = rows[0]
    for row in rows:
        for key in ("batch32_1t", "batch32_2t", "single_2t"):
            row[f"{key}_vs_embedq_0.2"] = row[key] / baseline[key]
        print(
            f"{row['candidate']:<55} cos>={row['cosine_to_sentence_transformers_min']:.7f} "
            f"b32 1t {row['batch32_1t']:.0f}/s ({row['batch32_1t_vs_embedq_0.2']:.2f}x) "
            f"2t {row['batch32_2t']:.0f}/s ({row['batch32_2t_vs_embedq_0.2']:.2f}x) single {row['single_2t']:.0f}/s"
        )
    save("export", {"sentences": len(sentences), "repeats": args.repeats, "candidates": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
