"""Tiny random models of real architectures (Qwen3, BERT), exported to ONNX the way hubs ship
them, so decoder and pooling behaviour is proven offline against transformers itself."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "stock",
    "market",
    "fell",
    "sharply",
    "today",
    "python",
    "list",
    "reverse",
    "query",
    "document",
    "what",
    "is",
    "how",
    "do",
    "i",
    "weather",
    "sunny",
    "warm",
    "kitten",
    "toy",
    "wool",
    "guitar",
    "man",
    "playing",
    "search",
    "passage",
    "answer",
]
DYNAMIC = torch.export.Dim.DYNAMIC


def make_tokenizer(directory: Path, template: str, specials: list[str]) -> Tokenizer:
    vocab = {token: i for i, token in enumerate([*specials, "[UNK]", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(token, vocab[token]) for token in specials if token in template]
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    return tokenizer


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def export(
    module: torch.nn.Module,
    args: tuple,
    names: list[str],
    outputs: list[str],
    path: Path,
    dynamic: dict[str, dict[int, object]],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_shapes=dynamic,
            external_data=False,
            dynamo=True,
            verbose=False,
        )


def tiny_qwen3(directory: Path, *, decoder_style: bool) -> torch.nn.Module:
    """A 2-layer Qwen3 with last-token pooling and Qwen3-Embedding's prompts. decoder_style: the
    onnx-community export's inputs (position_ids, past_key_values.*) and present.* outputs."""
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    make_tokenizer(directory, "$A <|endoftext|>", ["<|endoftext|>"])
    config = Qwen3Config(
        vocab_size=64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
    )
    model = Qwen3Model(config).eval()
    model.save_pretrained(str(directory))
    (directory / "model.safetensors").unlink()  # serving needs the ONNX graph only
    write_json(
        directory / "1_Pooling" / "config.json", {"word_embedding_dimension": 64, "pooling_mode_lasttoken": True}
    )
    write_json(
        directory / "config_sentence_transformers.json",
        {
            "prompts": {
                "query": "Instruct: Given a web search query, retrieve relevant passages\nQuery:",
                "document": "",
            }
        },
    )
    ids = torch.tensor([[5, 6, 7, 8, 0], [9, 10, 11, 12, 13]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    if not decoder_style:

        class Plain(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
                return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        export(
            Plain(),
            (ids, mask),
            ["input_ids", "attention_mask"],
            ["last_hidden_state"],
            directory / "model.onnx",
            {"input_ids": {0: DYNAMIC, 1: DYNAMIC}, "attention_mask": {0: DYNAMIC, 1: DYNAMIC}},
        )
        return model

    layers = config.num_hidden_layers
    past_names = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]

    class WithCache(torch.nn.Module):
        """The cache is always empty for embeddings; the graph keeps the interface and returns it as present.*."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):  # type: ignore[no-untyped-def]
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
            ).last_hidden_state
            touched = sum(p.sum() for p in past)  # keeps the inputs in the graph; zero for an empty cache
            return (hidden + touched, *(p * 1.0 for p in past))

    past = tuple(torch.zeros(2, 2, 0, 16) for _ in past_names)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    export(
        WithCache(),
        (ids, mask, positions, *past),
        ["input_ids", "attention_mask", "position_ids", *past_names],
        ["last_hidden_state", *[n.replace("past_key_values", "present") for n in past_names]],
        directory / "onnx" / "model.onnx",
        {
            "input_ids": {0: DYNAMIC, 1: DYNAMIC},
            "attention_mask": {0: DYNAMIC, 1: DYNAMIC},
            "position_ids": {0: DYNAMIC, 1: DYNAMIC},
            "past": tuple({0: DYNAMIC} for _ in past_names),
        },
    )
    return model


def tiny_bert(directory: Path) -> torch.nn.Module:
    """A 2-layer BERT with CLS pooling (1_Pooling says so)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    make_tokenizer(directory, "[CLS] $A [SEP]", ["[PAD]", "[CLS]", "[SEP]"])
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    model = BertModel(config).eval()
    model.save_pretrained(str(directory))
    (directory / "model.safetensors").unlink()
    write_json(
        directory / "1_Pooling" / "config.json", {"word_embedding_dimension": 32, "pooling_mode_cls_token": True}
    )

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    ids = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 8, 9, 2]])
    mask = (ids != 0).long()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    export(
        Hidden(),
        (ids, mask, torch.zeros_like(ids)),
        names,
        ["last_hidden_state"],
        directory / "model.onnx",
        {name: {0: DYNAMIC, 1: DYNAMIC} for name in names},
    )
    return model
