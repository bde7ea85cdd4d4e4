"""What a web app imports: enqueue texts, poll or wait for their embeddings."""

from producer.client import EmbedClient
from producer.errors import EmbedqError, InvalidInput, JobFailed, JobNotFound, JobTimeout, QueueFull, QueueUnavailable
from producer.protocol import EmbedResult
from producer.settings import ClientSettings

__all__ = [
    "ClientSettings",
    "EmbedClient",
    "EmbedResult",
    "EmbedqError",
    "InvalidInput",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "QueueFull",
    "QueueUnavailable",
]
