"""Qwen3-Embedding-style and BERT-cls models, proven offline on tiny random models of the same
architecture: pooling read from the model directory, decoder exports with position_ids and an
empty KV cache, prompts, Matryoshka dimensions, fp16 graphs."""

import subprocess

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from embedq import InvalidInput
from embedq.worker.model.encoder import Encoder
from embedq.worker.model.providers import choose_providers
from embedq.worker.model.spec import load_spec
from embedq.worker.supervisor.spawn import embedq_command
from tests.tiny_models import tiny_bert, tiny_qwen3

TEXTS = [
    "cat",
    "the dog sat on the mat today and the cat sat on the mat " * 12,  # far longer than the others
    "what is the weather today",
    "how do i reverse a python list",
    "kitten toy",
]


def encoder_for(directory, **options):
    return Encoder(
        load_spec(directory), providers=choose_providers(["cpu"], ["CPUExecutionProvider"]), threads=1, **options
    )


def normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def transformers_last_token(model, directory, texts, left_padding: bool) -> np.ndarray:
    """Qwen3-Embedding's own recipe: batch with padding, take the last real token, L2-normalize."""
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    rows = [tokenizer.encode(text).ids for text in texts]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left_padding else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    last = torch.tensor([width - 1 if left_padding else len(row) - 1 for row in rows])
    return normalized(hidden[torch.arange(len(rows)), last].numpy())


@pytest.fixture(scope="module")
def qwen3_plain(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen3-plain")
    return directory, tiny_qwen3(directory, decoder_style=False)


@pytest.fixture(scope="module")
def qwen3_decoder(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen3-decoder")
    return directory, tiny_qwen3(directory, decoder_style=True)


@pytest.fixture(scope="module")
def bert_cls(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bert-cls")
    return directory, tiny_bert(directory)


@pytest.mark.parametrize("style", ["qwen3_plain", "qwen3_decoder"])
def test_qwen3_vectors_equal_transformers_last_token_pooling(style, request):
    directory, model = request.getfixturevalue(style)
    encoder = encoder_for(directory)
    assert encoder.pooling == "lasttoken" and encoder.dim == 64
    ours = encoder.encode(TEXTS).vectors
    for left_padding in (True, False):
        reference = transformers_last_token(model, directory, TEXTS, left_padding)
        cosines = (ours * reference).sum(axis=1)
        assert cosines.min() >= 0.9999, (left_padding, cosines)


@pytest.mark.parametrize("style", ["qwen3_plain", "qwen3_decoder"])
def test_each_text_alone_equals_itself_inside_a_batch(style, request):
    directory, _ = request.getfixturevalue(style)
    encoder = encoder_for(directory, max_batch_tokens=100_000)
    together = encoder.encode(TEXTS).vectors
    alone = np.stack([encoder.encode([text]).vectors[0] for text in TEXTS])
    assert ((together * alone).sum(axis=1)).min() >= 0.9999


def test_the_decoder_export_gets_position_ids_and_an_empty_cache_of_the_declared_shape(qwen3_decoder):
    directory, _ = qwen3_decoder
    encoder = encoder_for(directory)
    assert set(encoder.past_shapes) == {f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")}
    assert set(encoder.past_shapes.values()) == {(2, 16)}
    feed, _ = encoder._feed(encoder.tokenizer.encode_batch(["cat", "the dog sat"]))
    assert feed["past_key_values.0.key"].shape == (2, 2, 0, 16)
    assert feed["position_ids"].tolist() == [[0, 1, 1, 1], [0, 1, 2, 3]]  # right padding: pads repeat the last position


def test_bert_cls_pooling_equals_transformers(bert_cls):
    directory, model = bert_cls
    encoder = encoder_for(directory)
    assert encoder.pooling == "cls"
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    for text in TEXTS:
        ids = torch.tensor([tokenizer.encode(text).ids[:128]])
        with torch.no_grad():
            cls = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 0].numpy()
        assert float((encoder.encode([text]).vectors * normalized(cls)).sum()) >= 0.9999


def test_pooling_can_be_overridden_by_the_setting(bert_cls):
    directory, _ = bert_cls
    assert encoder_for(directory, pooling="mean").pooling == "mean"
    assert not np.allclose(
        encoder_for(directory, pooling="mean").encode(TEXTS[:2]).vectors,
        encoder_for(directory).encode(TEXTS[:2]).vectors,
    )


def test_instruction_and_named_prompts_format_queries(qwen3_decoder):
    directory, _ = qwen3_decoder
    encoder = encoder_for(directory)
    instructed = encoder.encode(
        ["what is python"], instruction="Given a web search query, retrieve relevant passages"
    ).vectors
    by_name = encoder.encode(["what is python"], prompt_name="query").vectors
    by_hand = encoder.encode(
        ["Instruct: Given a web search query, retrieve relevant passages\nQuery:what is python"]
    ).vectors
    np.testing.assert_allclose(instructed, by_hand, atol=1e-6)
    np.testing.assert_allclose(by_name, by_hand, atol=1e-6)
    assert not np.allclose(encoder.encode(["what is python"]).vectors, by_hand, atol=1e-3)
    np.testing.assert_allclose(encoder.encode(["cat"], prompt_name="document").vectors, encoder.encode(["cat"]).vectors)
    with pytest.raises(
        InvalidInput, match=r"prompt_name='passage' is not one of the model's prompts \['document', 'query'\]"
    ):
        encoder.encode(["x"], prompt_name="passage")


def test_matryoshka_dimensions_on_a_decoder(qwen3_decoder):
    directory, _ = qwen3_decoder
    encoder = encoder_for(directory)
    full = encoder.encode(TEXTS).vectors
    short = encoder.encode(TEXTS, dimensions=32).vectors
    np.testing.assert_allclose(short, normalized(full[:, :32]), atol=1e-6)
    with pytest.raises(InvalidInput, match="dimensions=65 is more than the model's 64"):
        encoder.encode(TEXTS, dimensions=65)


def test_fp16_export_of_the_default_model_stays_within_cosine_0999(model_dir, encoder, tmp_path):
    import shutil

    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp16_dir = tmp_path / "fp16"
    shutil.copytree(model_dir, fp16_dir)
    onnx.save(
        convert_float_to_float16(onnx.load(str(model_dir / "model.onnx")), keep_io_types=False),
        str(fp16_dir / "model.onnx"),
    )
    half = encoder_for(fp16_dir)
    assert half.session.get_outputs()[0].type == "tensor(float16)"
    texts = ["A man is playing a guitar.", "The stock market fell sharply today.", "long " * 300]
    vectors = half.encode(texts).vectors
    assert vectors.dtype == np.float32
    assert ((vectors * encoder.encode(texts).vectors).sum(axis=1)).min() >= 0.999


def test_validate_and_info_describe_a_decoder_export(qwen3_decoder):
    directory, _ = qwen3_decoder
    validate = subprocess.run([*embedq_command(), "model", "validate", str(directory)], capture_output=True, text=True)
    assert validate.returncode == 0, validate.stderr
    for expected in (
        "onnx/model.onnx",
        "position_ids",
        "past_key_values.1.value",
        "present.0.key",
        "pooling lasttoken",
    ):
        assert expected in validate.stdout
    info = subprocess.run([*embedq_command(), "model", "info", str(directory)], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    assert "pooling           lasttoken" in info.stdout
    assert "past_key_values.0.key" in info.stdout and "tensor(float)" in info.stdout
