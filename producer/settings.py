"""What a producer needs to know, read from EMBEDQ_* variables or a .env file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from embedq.producer.errors import InvalidSettings
from embedq.producer.protocol import Limits

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# redis-py's TLS parameters of a rediss:// URL that name files: checked when the settings load
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
    redis_sentinels: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="host:port of Redis Sentinels, comma-separated: connect to the primary they name (and follow "
        "failovers); REDIS_URL then gives only user, password, database and TLS parameters",
    )
    redis_sentinel_master: str = Field("mymaster", min_length=1, description="the primary's name in Sentinel")
    require_noeviction: bool = Field(
        False,
        description="refuse to run (worker, `embedq stats`, gateway readiness) on a Redis whose maxmemory-policy "
        "may evict keys, or cannot be read; false: a loud warning",
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

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_addresses(cls, value: object) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        addresses = tuple(str(item).strip() for item in items if str(item).strip())
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port entries, comma-separated, got {address!r}")
        return addresses

    @field_validator("redis_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
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
