"""Every setting embedq reads, in one module (env prefix EMBEDQ_, also a .env file): ClientSettings
(what a producer needs: Redis, the queue, the limits), Settings (a worker's and the supervisor's: the
model and how to run it) and GatewaySettings (`embedq serve`'s HTTP side). One object, built once,
passed explicitly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from embedq.errors import InvalidSettings


def split_commas(value: object) -> tuple[str, ...]:
    """`a, b,,c` (or a list) as ("a", "b", "c"): blanks dropped, each entry stripped."""
    items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    return tuple(str(item).strip() for item in items if str(item).strip())


# A comma-separated list in an EMBEDQ_* variable (NoDecode: not parsed as JSON first).
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(split_commas)]


@dataclass(frozen=True)
class Limits:
    max_texts_per_job: int
    max_chars_per_text: int

    @property
    def max_payload_bytes(self) -> int:
        """The largest job a valid request can make: its texts and an instruction of as many characters,
        at 4 UTF-8 bytes a character, plus framing and options."""
        return (self.max_texts_per_job + 1) * (self.max_chars_per_text * 4 + 8) + 65_536


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# redis-py's TLS parameters of a rediss:// URL that name files: checked when the settings load
MAX_QUEUE_SHARDS = 256  # a shard is a hash slot of its own: far more than any Cluster has primaries
TLS_FILES = {"ssl_ca_certs": "CA certificate", "ssl_certfile": "client certificate", "ssl_keyfile": "client key"}


class ClientSettings(BaseSettings):
    """Connection, queue and limits shared by producers and workers."""

    model_config = SettingsConfigDict(env_prefix="EMBEDQ_", env_file=".env", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="redis://[user:password@]host:port/db, rediss:// for TLS"
    )
    queue: str = Field("embedq", min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    max_texts_per_job: int = Field(256, ge=1, le=100_000)
    max_chars_per_text: int = Field(20_000, ge=1)
    max_queue_length: int = Field(10_000, ge=1, description="interactive jobs waiting before submit raises QueueFull")
    max_bulk_queue_length: int = Field(
        100_000, ge=1, description="bulk jobs waiting before a bulk submit raises QueueFull"
    )
    result_ttl: int = Field(3600, ge=1, description="seconds a result is kept")
    job_timeout: int = Field(120, ge=1, description="seconds one job may run before it is stopped")
    retries: int = Field(2, ge=0, le=20, description="re-runs of a job whose worker died or that failed")
    redis_sentinels: CommaList = Field(
        (),
        description="host:port of Redis Sentinels, comma-separated: connect to the primary they name (and follow "
        "failovers); REDIS_URL then gives only user, password, database and TLS parameters",
    )
    redis_sentinel_master: str = Field("mymaster", min_length=1, description="the primary's name in Sentinel")
    redis_cluster: bool = Field(
        False,
        description="REDIS_URL is one node of a Redis Cluster (any node: the others are discovered from it); "
        "not with REDIS_SENTINELS; spread a queue over its primaries with QUEUE_SHARDS (the Batch API does not "
        "run there yet)",
    )
    queue_shards: int = Field(
        1,
        ge=1,
        le=MAX_QUEUE_SHARDS,
        description="hash-tagged parts a queue is split into, each with both lanes, spread over a Cluster's "
        "primaries (each holds up to MAX_QUEUE_LENGTH / MAX_BULK_QUEUE_LENGTH jobs)",
    )
    require_noeviction: bool = Field(
        False,
        description="refuse to run (worker, `embedq stats`, gateway readiness) on a Redis whose maxmemory-policy "
        "may evict keys, or cannot be read; false: a loud warning",
    )

    cache: bool = Field(
        True,
        description="look every text up in the fleet-wide cache before a worker sees it; store what workers compute",
    )
    cache_ttl: int = Field(
        7 * 24 * 3600,
        ge=1,
        description="seconds a cache entry lives, pushed back on every hit (it outlives RESULT_TTL)",
    )
    cache_url: str = Field(
        "",
        description="a Redis of its own for the cache (run with maxmemory and allkeys-lru, which then bound it); "
        "'' = the queue's Redis, where CACHE_MAX_BYTES bounds it",
    )
    cache_max_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="bytes the cache may take in the queue's Redis (and at most a quarter of its maxmemory); "
        "the least recently used entries go first",
    )

    @classmethod
    def load(cls, **values: Any) -> Self:
        """The settings from the environment and .env, with `values` on top; InvalidSettings names each bad one."""
        try:
            return cls(**values)
        except ValidationError as error:
            problems = "; ".join(
                f"EMBEDQ_{'_'.join(str(part) for part in issue['loc']).upper()}: {issue['msg']}"
                for issue in error.errors()
            )
            raise InvalidSettings(f"invalid settings: {problems} (fix the EMBEDQ_* variable or .env)") from None

    @property
    def limits(self) -> Limits:
        """The request limits, as the client checks them and the worker checks them again."""
        return Limits(self.max_texts_per_job, self.max_chars_per_text)

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, addresses: tuple[str, ...]) -> tuple[str, ...]:
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port entries, comma-separated, got {address!r}")
        return addresses

    @field_validator("redis_cluster")
    @classmethod
    def _cluster_or_sentinel(cls, cluster: bool, info: ValidationInfo) -> bool:
        if cluster and info.data.get("redis_sentinels"):
            raise ValueError("a Redis Cluster fails over by itself: set REDIS_CLUSTER or REDIS_SENTINELS, not both")
        if cluster and str(info.data.get("redis_url", "")).startswith("unix://"):
            raise ValueError("a Redis Cluster is reached over TCP: REDIS_URL must be redis:// or rediss://")
        return cluster

    @field_validator("redis_url", "cache_url")
    @classmethod
    def _known_scheme(cls, url: str, info: ValidationInfo) -> str:
        if info.field_name == "cache_url" and not url:  # unset: the cache lives in the queue's Redis
            return url
        if not url.startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with one of {', '.join(REDIS_SCHEMES)}, got {redact_url(url)!r}")
        for name, values in parse_qs(urlsplit(url).query).items():
            if name in TLS_FILES and not Path(values[-1]).is_file():
                raise ValueError(f"{name}={values[-1]} names no readable file (the TLS {TLS_FILES[name]})")
        return url


def client_settings(redis_url: str | None, queue: str | None, settings: ClientSettings | None) -> ClientSettings:
    """`settings` (else the environment's and .env's), with `redis_url` and `queue` on top when given."""
    overrides = {key: value for key, value in {"redis_url": redis_url, "queue": queue}.items() if value is not None}
    base = settings or ClientSettings.load()
    return base.model_copy(update=overrides) if overrides else base


def redact_url(url: str) -> str:
    """The URL with its password (in user:password@ or a password= parameter) replaced, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        parts = parts._replace(netloc=f"{user}:***@{host}" + (f":{parts.port}" if parts.port else ""))
    if "password" in parse_qs(parts.query):
        query = [(name, "***" if name == "password" else value) for name, value in parse_qsl(parts.query)]
        parts = parts._replace(query=urlencode(query, safe="*/"))
    return urlunsplit(parts)


DEFAULT_MODEL_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "embedq" / "all-MiniLM-L6-v2"


class Settings(ClientSettings):
    """Everything a worker, the supervisor and the CLI read; built once and passed explicitly."""

    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="ONNX model directory (see `embedq model prepare`)")
    providers: CommaList = Field(
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

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names:
            raise ValueError("must name at least one provider, or 'auto'")
        if "auto" in names and len(names) > 1:
            raise ValueError("'auto' cannot be combined with named providers")
        return names

    def threads_per_worker(self) -> int:
        """Intra-op threads for one worker: the setting, or the cores shared out among the workers."""
        return self.intra_op_threads or max(1, (os.cpu_count() or 1) // self.workers)


class GatewaySettings(ClientSettings):
    """What `embedq serve` reads besides the client's: the HTTP side and the Batch API's files."""

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
    api_keys: CommaList = Field(
        (), description="comma-separated keys accepted as `Authorization: Bearer KEY`; empty = open"
    )
    cache_scope: Literal["key", "shared"] = Field(
        "key",
        description="key: each API key has a cache of its own (no caller learns from timing what another embedded); "
        "shared: one cache for every key",
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

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _parse_aliases(cls, value: object) -> dict[str, str]:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        aliases = {}
        for pair in split_commas(value):
            alias, sep, served = pair.partition("=")
            if not sep or not alias.strip() or not served.strip():
                raise ValueError(f"expected alias=model pairs, got {pair.strip()!r}")
            aliases[alias.strip()] = served.strip()
        return aliases
