"""The named errors a producer sees. All derive from EmbedqError."""

from __future__ import annotations

from dataclasses import dataclass


class EmbedqError(Exception):
    """Base class of every error embedq raises on purpose."""


class InvalidSettings(EmbedqError, ValueError):
    """A setting (EMBEDQ_* variable, .env file or argument) has a value embedq cannot run with."""


class RedisAuthFailed(InvalidSettings):
    """Redis refused the credentials in REDIS_URL (wrong password, unknown or disabled ACL user): a setting
    to fix, not an outage to wait out."""


class RedisTLSFailed(InvalidSettings):
    """The TLS handshake with Redis failed (its certificate not verified against ssl_ca_certs, or the
    client certificate missing or refused): a setting to fix, not an outage."""


@dataclass(frozen=True)
class Refusal:
    """Which text of a job broke which rule, as data that travels between processes (a worker's refusal
    reaches the gateway this way, never as text to parse): `code` names the rule (TEXT_RULES), `index`
    the text in its job, `limit` the limit it passed, `found` what it had instead (a count, a type's name,
    a position)."""

    code: str
    index: int
    limit: int | None = None
    found: int | str | None = None


# The rules a single text can break, by Refusal.code.
TEXT_RULES = ("not_a_string", "empty_text", "too_many_characters", "invalid_unicode", "too_many_tokens")


class InvalidInput(EmbedqError, ValueError):
    """A request breaks the job schema or a configured limit; nothing was enqueued. `refusal`: which text
    and rule, when one text is to blame."""

    def __init__(self, message: str, refusal: Refusal | None = None):
        super().__init__(message)
        self.refusal = refusal


class QueueFull(EmbedqError):
    """The queue already holds its configured maximum of jobs; try again later or add workers."""


class NotCached(EmbedqError):
    """Only the cache was to answer (no worker serves the queue now), and some texts are not in it; nothing
    was enqueued."""


class QueueUnavailable(EmbedqError, ConnectionError):
    """Redis did not answer; nothing was enqueued by the call that raised this."""


class RedisOutOfMemory(QueueUnavailable):
    """Redis refused a write at its `maxmemory` (policy noeviction); nothing was enqueued by the call that
    raised this. Free memory (fewer queued jobs, a shorter RESULT_TTL) or raise maxmemory."""


class JobFailed(EmbedqError):
    """The job ended in failure; `reason` holds the worker's explanation, and `refusal` which text and
    rule when the worker refused one text of it."""

    def __init__(self, job_id: str, reason: str, refusal: Refusal | None = None):
        super().__init__(f"job {job_id} failed: {reason}")
        self.job_id = job_id
        self.reason = reason
        self.refusal = refusal


class JobTimeout(EmbedqError, TimeoutError):
    """The job did not finish before the caller's deadline (it may still finish later)."""


class JobNotFound(EmbedqError, KeyError):
    """No such job: never enqueued, or its result and record have expired."""


class JobLost(JobNotFound):
    """The job's records are gone from Redis before its result could have expired: Redis dropped them
    (evicted under a maxmemory-policy other than noeviction, or restarted without persistence)."""


class BatchNotFound(EmbedqError, KeyError):
    """No such batch of the Batch API: never created, or expired after FILES_RETENTION."""
