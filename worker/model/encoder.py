"""Texts → float32 vectors with one ONNX Runtime session and one tokenizer, loaded once.
Knows nothing of queues."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from embedq.broker.jobs import EmbedRequest
from embedq.broker.vectors import shape
from embedq.config import Settings
from embedq.errors import InvalidInput, Refusal
from embedq.worker.model.pooling import POOLERS
from embedq.worker.model.providers import ProviderList, choose_providers
from embedq.worker.model.spec import ModelError, ModelSpec, load_spec

POOLED_OUTPUTS = ("sentence_embedding",)
TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
NUMPY_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
PAST_PREFIX = "past_key_values"
# A micro-batch ends where the next text is longer than RAGGED_RATIO x its shortest + RAGGED_SLACK tokens.
RAGGED_RATIO = 1.5
RAGGED_SLACK = 16
# Called between two micro-batches; returns the indices of the requests to drop from the rest of the pass.
Between = Callable[[], set[int]]


def past_head_shape(declared: list[Any], spec: ModelSpec) -> tuple[int, int]:
    """(heads, head_dim) of a past_key_values input: from the graph when it says, else config.json."""
    heads, head_dim = (declared[1], declared[3]) if len(declared) == 4 else (None, None)
    heads = heads if isinstance(heads, int) else spec.kv_heads
    head_dim = head_dim if isinstance(head_dim, int) else spec.head_dim
    if not heads or not head_dim:
        raise ModelError(f"cannot tell the KV-cache head shape from the graph ({declared}) or config.json")
    return heads, head_dim


@dataclass
class Encoded:
    vectors: np.ndarray
    tokens: int
    truncated: int
    timings: dict[str, float]
    started: float  # wall-clock time the (possibly shared) pass began
    text_tokens: list[int]  # per text, in input order
    pooled: np.ndarray  # the model's vectors before `dimensions` and `normalize` (what the cache keeps)
    text_truncated: list[bool]  # per text: cut to the model's maximum length


class Encoder:
    """One model, ready to embed: tokenizer + session + pooling read from the model directory."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        providers: ProviderList,
        threads: int,
        max_length: int = 0,
        max_batch_tokens: int = 2048,
        pooling: str = "",
    ):
        self.spec = spec
        self.max_length = min(max_length or spec.max_length, spec.max_length)
        self.max_batch_tokens = max_batch_tokens
        self.pooling = pooling or spec.pooling
        self.pool = POOLERS[self.pooling]

        try:
            self.tokenizer = Tokenizer.from_file(str(spec.tokenizer_path))
        except Exception as error:
            raise ModelError(f"{spec.tokenizer_path} does not load: {error}") from None
        self.pad_id = int((self.tokenizer.padding or {}).get("pad_id", 0))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()  # each micro-batch is padded to its own longest text below

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Texts vary in length, so every batch has a new shape: memory patterns, planned per shape,
        # make RSS climb with that variety (bench/memory.py: 1.23x vs 1.08x over 3,000 random shapes).
        options.enable_mem_pattern = False
        try:
            self.session = ort.InferenceSession(
                str(spec.onnx_path),
                sess_options=options,
                providers=[name for name, _ in providers],
                provider_options=[opts for _, opts in providers],
            )
        except Exception as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelError(
                f"{spec.onnx_path} does not load in onnxruntime ({first_line}); "
                "check it with `embedq model validate`, or export it again with `embedq model prepare --force`"
            ) from None
        self.providers = self.session.get_providers()
        self.inputs = {i.name: NUMPY_TYPES.get(i.type, np.int64) for i in self.session.get_inputs()}
        # Decoder exports (onnx-community Qwen3-Embedding) also want a KV cache: fed empty, declared head shape.
        self.past_shapes = {
            i.name: past_head_shape(i.shape, spec) for i in self.session.get_inputs() if i.name.startswith(PAST_PREFIX)
        }
        unknown = set(self.inputs) - set(TOKEN_INPUTS) - set(self.past_shapes)
        if unknown:
            raise ModelError(f"the graph wants inputs embedq cannot feed: {sorted(unknown)}")
        outputs = {o.name: o for o in self.session.get_outputs()}
        self.output = next((n for n in (*POOLED_OUTPUTS, *TOKEN_OUTPUTS) if n in outputs), next(iter(outputs)))
        self.pre_pooled = self.output in POOLED_OUTPUTS
        last_dim = outputs[self.output].shape[-1]
        self.dim = last_dim if isinstance(last_dim, int) else spec.dim

    @classmethod
    def from_settings(cls, settings: Settings) -> Encoder:
        return cls(
            load_spec(settings.model_dir),
            providers=choose_providers(
                settings.providers, ort.get_available_providers(), strict=settings.strict_providers
            ),
            threads=settings.threads_per_worker(),
            max_length=settings.max_length,
            max_batch_tokens=settings.max_batch_tokens,
            pooling=settings.pooling,
        )

    def encode(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
        prompt_name: str | None = None,
    ) -> Encoded:
        """Vectors (len(texts), dimensions or dim) in input order."""
        (encoded,) = self.encode_many([EmbedRequest(list(texts), instruction, normalize, dimensions, prompt_name)])
        return cast(Encoded, encoded)  # no `between`: nothing is dropped

    def encode_many(self, requests: Sequence[EmbedRequest], *, between: Between | None = None) -> list[Encoded | None]:
        """Several requests through one inference pass (coalesced jobs); each gets its own vectors,
        shaped by its own options, and its share of the pass's time by tokens. `between` is called
        between two micro-batches (a worker serves more urgent work there) and names the requests to
        drop (cancelled meanwhile): their texts are not run further and their place in the answer is None.
        A text that occurs more than once in the pass (with the same prefix) is run once."""
        for request in requests:
            if request.dimensions is not None and request.dimensions > self.dim:
                raise InvalidInput(f"dimensions={request.dimensions} is more than the model's {self.dim}")
        started = time.time()
        texts = [self._prefix(request) + text for request in requests for text in request.texts]
        owners = np.repeat(np.arange(len(requests)), [len(request.texts) for request in requests])
        distinct: dict[str, int] = {}
        where = np.array([distinct.setdefault(text, len(distinct)) for text in texts], dtype=np.int64)
        owners_of: list[set[int]] = [set() for _ in distinct]
        for row, owner in zip(where, owners):
            owners_of[row].add(int(owner))
        pooled, lengths, truncated, timings, dropped = self._pool(list(distinct), owners_of, between)
        pooled, lengths, truncated = pooled[where], lengths[where], truncated[where]
        results: list[Encoded | None] = []
        start = 0
        total_tokens = max(int(lengths.sum()), 1)
        for number, request in enumerate(requests):
            end = start + len(request.texts)
            if number in dropped:
                results.append(None)
                start = end
                continue
            if not request.truncate and truncated[start:end].any():
                index = int(np.flatnonzero(truncated[start:end])[0])
                raise InvalidInput(
                    f"texts[{index}] has more than the model's maximum of {self.max_length} tokens, and truncate=False",
                    Refusal("too_many_tokens", index, self.max_length),
                )
            t0 = time.perf_counter()
            vectors = shape(pooled[start:end], request.dimensions, request.normalize)
            tokens = int(lengths[start:end].sum())
            share = {name: value * tokens / total_tokens for name, value in timings.items()}
            share["pool_ms"] += (time.perf_counter() - t0) * 1000
            per_text = [int(length) for length in lengths[start:end]]
            cut = [bool(flag) for flag in truncated[start:end]]
            results.append(Encoded(vectors, tokens, sum(cut), share, started, per_text, pooled[start:end], cut))
            start = end
        return results

    def _prefix(self, request: EmbedRequest) -> str:
        """What goes before each text: an instruction (Qwen3-Embedding's query format) or a named prompt."""
        if request.instruction:
            return f"Instruct: {request.instruction}\nQuery:"
        if request.prompt_name is None:
            return ""
        if request.prompt_name not in self.spec.prompts:
            raise InvalidInput(
                f"prompt_name={request.prompt_name!r} is not one of the model's prompts {sorted(self.spec.prompts)}"
            )
        return self.spec.prompts[request.prompt_name]

    def _pool(
        self, texts: list[str], owners: list[set[int]], between: Between | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float], set[int]]:
        """Tokenize, infer in length-sorted micro-batches, pool: raw float32 vectors in input order, and the
        requests (`owners`: each text's) dropped on the way (a text is run while one of its owners is not)."""
        if not texts:  # every text of the pass came from the cache
            nothing = {"tokenize_ms": 0.0, "infer_ms": 0.0, "pool_ms": 0.0}
            return np.empty((0, self.dim), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), nothing, set()
        started = time.perf_counter()
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=True)
        lengths = np.array([len(e.ids) for e in encodings])
        truncated = np.array([bool(e.overflowing) for e in encodings])
        tokenized = time.perf_counter()
        pooled = np.empty((len(encodings), self.dim), dtype=np.float32)
        infer_s = pool_s = 0.0
        dropped: set[int] = set()
        for number, batch in enumerate(self._micro_batches(lengths)):
            if number and between is not None:
                dropped |= between()
                if dropped:
                    batch = batch[np.array([not owners[row] <= dropped for row in batch], dtype=bool)]
                    if not len(batch):
                        continue
            feed, mask = self._feed([encodings[i] for i in batch])
            t0 = time.perf_counter()
            (hidden,) = self.session.run([self.output], feed)
            t1 = time.perf_counter()
            pooled[batch] = hidden.astype(np.float32) if self.pre_pooled else self.pool(hidden, mask)
            pool_s += time.perf_counter() - t1
            infer_s += t1 - t0
        timings = {"tokenize_ms": (tokenized - started) * 1000, "infer_ms": infer_s * 1000, "pool_ms": pool_s * 1000}
        return pooled, lengths, truncated, timings, dropped

    def _micro_batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Indices sorted by length, cut where the batch padded to its longest would pass the token
        budget, or where the next text is much longer than the batch's shortest (padding would
        waste more compute than another session.run costs)."""
        order = np.argsort(lengths, kind="stable")
        batches: list[np.ndarray] = []
        start = 0
        for end in range(1, len(order) + 1):
            count, longest, shortest = end - start, lengths[order[end - 1]], lengths[order[start]]
            ragged = longest > RAGGED_RATIO * shortest + RAGGED_SLACK
            if count > 1 and (count * longest > self.max_batch_tokens or ragged):
                batches.append(order[start : end - 1])
                start = end - 1
        batches.append(order[start:])
        return batches

    def _feed(self, encodings: list[Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The inputs the graph declares, padded to this batch's longest text."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        available = {
            "input_ids": ids,
            "attention_mask": mask,
            "token_type_ids": types,
            "position_ids": np.maximum(np.cumsum(mask, axis=1) - 1, 0),
        }
        feed = {
            name: available[name].astype(dtype, copy=False) for name, dtype in self.inputs.items() if name in available
        }
        for name, (heads, head_dim) in self.past_shapes.items():
            feed[name] = np.zeros((len(encodings), heads, 0, head_dim), dtype=self.inputs[name])
        return feed, mask
