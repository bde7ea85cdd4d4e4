"""`embedq model prepare --quantize int8`: an int8 copy whose vectors stay the model's, judged on text
it was not calibrated on, named for its precision; and a gate that keeps no copy that drifts."""

import json
import subprocess
import uuid

import pytest

from embedq.broker.cache import CACHE_WORKER
from embedq.config import Settings
from embedq.worker.model import quantize
from embedq.worker.model.encoder import Encoder
from embedq.worker.model.export import default_source
from embedq.worker.model.quality import agreement, cosine_spearman, split_stsb
from embedq.worker.model.quantize import GOALS, STSB_MAX_LOSS, Int8Recipe, Int8Report, quantize_int8
from embedq.worker.model.spec import ModelError, load_spec
from embedq.worker.supervisor.spawn import embedq_command
from tests.conftest import make_settings, served_alone


@pytest.fixture(scope="module")
def prepared(stsb, tmp_path_factory):
    """The default model and its int8 copy, made by the command a user runs, in a directory of their own."""
    fp32 = tmp_path_factory.mktemp("models") / "all-MiniLM-L6-v2"
    run = subprocess.run(
        [*embedq_command(), "model", "prepare", "--dir", str(fp32), "--quantize", "int8", "--stsb", str(stsb)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return fp32, fp32.with_name("all-MiniLM-L6-v2-int8"), run.stdout


def test_the_copy_meets_every_goal_on_held_out_text_and_prints_all_three_measures(prepared):
    _, int8, stdout = prepared
    assert "int8 copy ready" in stdout
    for measure in ("cosine to fp32 p1", "top-10 neighbour overlap", "STS-B"):
        assert measure in stdout
    quality = json.loads((int8 / "quality.json").read_text())
    assert quality["precision"] == "int8"
    assert set(quality["held_out"]) == {"A", "B"} and "seed 1" in quality["judged_on"]
    for measured in (quality["evaluation"], *quality["held_out"].values()):
        for name, goal in GOALS.items():
            assert measured[name] >= goal, (name, measured)
    assert quality["evaluation"]["stsb_loss"] <= STSB_MAX_LOSS
    validate = subprocess.run([*embedq_command(), "model", "validate", str(int8)], capture_output=True, text=True)
    assert validate.returncode == 0 and '"precision": "int8"' in validate.stdout


def test_int8_vectors_stay_the_models_vectors_on_sentences_it_was_not_calibrated_on(prepared, stsb):
    fp32_dir, int8_dir, _ = prepared
    split = split_stsb(stsb)
    fp32 = Encoder.from_settings(Settings(model_dir=fp32_dir, workers=1)).encode(split.evaluation).vectors
    int8 = Encoder.from_settings(Settings(model_dir=int8_dir, workers=1)).encode(split.evaluation).vectors
    measured = agreement(fp32, int8)
    print(measured)
    assert measured["cosine_p1"] >= 0.99
    assert measured["cosine_median"] >= 0.995
    assert measured["neighbour_overlap"] >= 0.95
    row = {text: index for index, text in enumerate(split.evaluation)}
    first, second = [row[t] for t in split.first], [row[t] for t in split.second]
    stsb_fp32 = cosine_spearman(fp32[first], fp32[second], split.gold)
    assert stsb_fp32 - cosine_spearman(int8[first], int8[second], split.gold) <= STSB_MAX_LOSS


def test_the_copy_is_named_for_its_precision_wherever_it_is_moved(prepared, tmp_path):
    fp32_dir, int8_dir, _ = prepared
    assert load_spec(fp32_dir).name == "all-MiniLM-L6-v2"
    assert (load_spec(int8_dir).name, load_spec(int8_dir).precision) == ("all-MiniLM-L6-v2-int8", "int8")
    moved = tmp_path / "minilm"
    int8_dir.rename(moved)
    try:
        assert load_spec(moved).name == "minilm-int8"
    finally:
        moved.rename(int8_dir)


def test_the_gate_keeps_no_copy_made_the_naive_way(prepared, stsb, tmp_path):
    fp32_dir, _, _ = prepared
    target = tmp_path / "naive-int8"
    naive = Int8Recipe(per_channel=False, smoothing=None, max_fp32_layers=0, max_uint8_layers=0)  # every layer
    with pytest.raises(ModelError, match=r"the int8 copy misses cosine_p1 0\.\d+ < 0\.99.*not saved"):
        quantize_int8(default_source(), fp32_dir, stsb, target, naive)
    assert not target.exists()
    assert not list(tmp_path.glob(".staging-*"))


def test_the_held_out_half_is_cut_in_two_disjoint_fixed_splits_and_a_miss_on_either_keeps_no_copy(stsb):
    split = split_stsb(stsb)
    splits = split.held_out_splits()
    a, b = (set(rows.tolist()) for rows in splits.values())
    assert not a & b and a | b == set(range(len(split.evaluation))) and abs(len(a) - len(b)) <= 1
    assert [rows.tolist() for rows in split.held_out_splits().values()] == [sorted(a), sorted(b)], "fixed seed"
    met = {"cosine_min": 0.99, "cosine_p1": 0.995, "cosine_median": 0.999, "neighbour_overlap": 0.96}
    report = Int8Report(recipe={}, evaluation={**met, "stsb_loss": 0.0}, held_out={"A": met, "B": met})
    assert report.misses() == []
    report.held_out["B"] = {**met, "neighbour_overlap": 0.946}
    assert report.misses() == ["neighbour_overlap 0.9460 < 0.95 on held-out split B"]


@pytest.mark.unit
@pytest.mark.parametrize("prepared_on_vnni", [True, False])
def test_a_worker_on_the_other_kind_of_cpu_is_told_so_with_the_command_that_prepares_a_copy_for_it(
    tmp_path, monkeypatch, prepared_on_vnni
):
    copy = tmp_path / "minilm-int8"
    copy.mkdir()
    flags = ["avx2", "avx512_vnni", "avx512f"] if prepared_on_vnni else ["avx2", "fma"]
    (copy / "quality.json").write_text(json.dumps({"precision": "int8", "cpu_flags": flags}))
    monkeypatch.setattr(quantize, "has_vnni", lambda: prepared_on_vnni)
    assert quantize.cpu_kind_warning(copy) is None, "same kind: nothing to say"
    monkeypatch.setattr(quantize, "has_vnni", lambda: not prepared_on_vnni)
    warning = quantize.cpu_kind_warning(copy)
    assert warning is not None
    assert f"prepared on a CPU {'with' if prepared_on_vnni else 'without'} VNNI" in warning
    assert ("saturate" in warning) == prepared_on_vnni
    assert f"embedq model prepare --dir {tmp_path / 'minilm'} --quantize int8" in warning
    (copy / "quality.json").write_text(json.dumps({"precision": "int8"}))  # made before the flags were recorded
    assert quantize.cpu_kind_warning(copy) is None
    assert quantize.cpu_kind_warning(tmp_path) is None, "an fp32 model directory"


def test_an_int8_copy_and_its_fp32_model_on_one_queue_name_never_see_each_others_cache_entries(prepared, redis_url):
    """The cache's keys carry the model's identity (its files and precision, not its name): the int8 copy
    served after the fp32 model computes its own vectors, and each finds only its own entries again."""
    fp32_dir, int8_dir, _ = prepared
    fp32_settings = make_settings(redis_url, fp32_dir)
    int8_settings = Settings(**{**fp32_settings.model_dump(), "model_dir": int8_dir})
    texts = [f"a sentence for two precisions, {uuid.uuid4().hex}" for _ in range(3)]
    fp32 = served_alone(fp32_settings, texts)
    int8 = served_alone(int8_settings, texts)
    assert CACHE_WORKER not in (fp32.worker, int8.worker)
    assert int8.embeddings.tobytes() != fp32.embeddings.tobytes()
    for settings, filled in ((fp32_settings, fp32), (int8_settings, int8)):
        again = served_alone(settings, texts)
        assert again.worker == CACHE_WORKER and again.embeddings.tobytes() == filled.embeddings.tobytes()
