"""The gateway's settings: ClientSettings plus the HTTP side, from EMBEDQ_* variables or .env."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from embedq.producer.settings import ClientSettings


class GatewaySettings(ClientSettings):
    http_host: str = Field("127.0.0.1", description="address `embedq serve` listens on (0.0.0.0: every interface)")
    http_port: int = Field(8000, ge=1, le=65535)
    http_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
    http_max_inputs: int = Field(2048, ge=1, description="texts in one request (OpenAI's limit)")
    http_truncate: bool = Field(
        True,
        description="texts over the model's maximum length are truncated (as sentence-transformers does); false: 400",
    )
    http_request_timeout: float = Field(60.0, gt=0, description="seconds a request may wait for its jobs (504 after)")
    http_read_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a connection has to send a request's headers and body (and may sit idle between "
        "requests) before it is closed",
    )
    http_max_connections: int = Field(1000, ge=1, description="open connections; past it new ones get 503 at once")
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated keys accepted as `Authorization: Bearer KEY`; empty = open"
    )
    model_aliases: Annotated[dict[str, str], NoDecode] = Field(
        {}, description="name=served-model pairs, comma-separated (e.g. sentence-transformers/all-MiniLM-L6-v2=...)"
    )
    files_dir: Path = Field(
        Path.home() / ".local" / "share" / "embedq" / "files",
        description="where the Batch API keeps files (uploads, outputs); several gateway replicas must share it",
    )
    files_max_bytes: int = Field(200 * 1024 * 1024, ge=1, description="largest file /v1/files accepts (OpenAI's)")
    files_quota_bytes: int = Field(
        10 * 1024**3, ge=1, description="bytes one key's stored files (uploads, batch outputs) may total; 429 past it"
    )
    files_retention: timedelta = Field(
        timedelta(days=30),
        ge=timedelta(days=1),  # a batch may run its whole 24 h window on files kept that long
        description="how long files and batches are kept (seconds, or ISO 8601 such as P30D); at least a day",
    )
    batch_max_lines: int = Field(50_000, ge=1, description="requests in one batch's input file (OpenAI's limit)")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        return tuple(str(item).strip() for item in items if str(item).strip())

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _parse_aliases(cls, value: object) -> dict[str, str]:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        aliases = {}
        for pair in str(value).split(","):
            if not pair.strip():
                continue
            alias, sep, served = pair.partition("=")
            if not sep or not alias.strip() or not served.strip():
                raise ValueError(f"expected alias=model pairs, got {pair.strip()!r}")
            aliases[alias.strip()] = served.strip()
        return aliases
