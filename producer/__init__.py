"""What a web app imports: enqueue texts, poll or wait for their embeddings."""

from embedq.producer.client import EmbedClient
from embedq.producer.errors import (
    EmbedqError,
    InvalidInput,
    InvalidSettings,
    JobFailed,
    JobNotFound,
    JobTimeout,
    QueueFull,
    QueueUnavailable,
)
from embedq.producer.protocol import EmbedResult
from embedq.producer.settings import ClientSettings

__all__ = [
    "ClientSettings",
    "EmbedClient",
    "EmbedResult",
    "EmbedqError",
    "InvalidInput",
    "InvalidSettings",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "QueueFull",
    "QueueUnavailable",
]
