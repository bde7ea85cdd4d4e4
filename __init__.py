"""embedq: text embeddings behind a Redis job queue.

This file is the `embedq` package itself: pyproject.toml maps the repository root to `embedq`,
so its folders install as its sub-packages (`embedq.producer`, `embedq.worker`, `embedq.broker`,
`embedq.gateway`, `embedq.config`, `embedq.local`) and nothing else lands at the top level of
site-packages. What a web app imports is re-exported here and needs only the base install (no
onnxruntime)."""

from embedq.broker.jobs import EmbedResult
from embedq.config.settings import ClientSettings
from embedq.errors import (
    EmbedqError,
    InvalidInput,
    InvalidSettings,
    JobFailed,
    JobLost,
    JobNotFound,
    JobTimeout,
    QueueFull,
    QueueUnavailable,
    RedisOutOfMemory,
)
from embedq.producer.aio import AsyncEmbedClient
from embedq.producer.client import EmbedClient

__all__ = [
    "AsyncEmbedClient",
    "ClientSettings",
    "EmbedClient",
    "EmbedResult",
    "EmbedqError",
    "InvalidInput",
    "InvalidSettings",
    "JobFailed",
    "JobLost",
    "JobNotFound",
    "JobTimeout",
    "QueueFull",
    "QueueUnavailable",
    "RedisOutOfMemory",
]
