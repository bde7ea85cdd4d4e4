"""The service's settings: ClientSettings plus what a worker needs to load and run the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from embedq.producer.settings import ClientSettings

DEFAULT_MODEL_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedq" / "all-MiniLM-L6-v2"


class Settings(ClientSettings):
    """Everything a worker, the supervisor and the CLI read; built once and passed explicitly."""

    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="ONNX model directory (see `embedq model prepare`)")
    providers: Annotated[tuple[str, ...], NoDecode] = Field(
        ("auto",), description="'auto' or a comma-separated list, e.g. CoreMLExecutionProvider,CPUExecutionProvider"
    )
    strict_providers: bool = Field(False, description="fail instead of falling back to CPU when a provider is missing")
    intra_op_threads: int = Field(0, ge=0, description="0 = cores ÷ workers")
    max_length: int = Field(0, ge=0, description="0 = the model's own maximum")
    # Small micro-batches are as fast on CPU and keep the activation peak (and so RSS) low: bench/memory.py.
    max_batch_tokens: int = Field(2048, ge=64, description="padded tokens in one inference micro-batch")
    pooling: Literal["", "mean", "cls", "lasttoken"] = Field("", description="'' = read from the model directory")
    workers: int = Field(2, ge=1, le=256)
    heartbeat_timeout: float = Field(
        20.0, gt=2, le=300, description="seconds without a heartbeat after which the supervisor kills a worker (hung)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="worker log level; INFO logs every job (rq), WARNING only what goes wrong"
    )
    coalesce_jobs: int = Field(32, ge=1, description="waiting jobs a worker embeds in one pass (1 = off)")
    coalesce_texts: int = Field(256, ge=1, description="stop taking waiting jobs once this many texts are in the pass")
    stsb: Path | None = Field(None, description="STS Benchmark test file (sts-test.csv) for the int8 quality gate")

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        names = tuple(str(item).strip() for item in items if str(item).strip())
        if not names:
            raise ValueError("must name at least one provider, or 'auto'")
        if "auto" in names and len(names) > 1:
            raise ValueError("'auto' cannot be combined with named providers")
        return names

    def threads_per_worker(self) -> int:
        """Intra-op threads for one worker: the setting, or the cores shared out among the workers."""
        return self.intra_op_threads or max(1, (os.cpu_count() or 1) // self.workers)
