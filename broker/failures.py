"""Which Redis failures are a setting to fix rather than an outage to wait out: refused credentials and
failed TLS handshakes. Everything else that stops Redis from answering is an outage."""

from __future__ import annotations

from redis import Redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from embedq.config.settings import redact_url
from embedq.errors import EmbedqError, InvalidSettings, QueueUnavailable, RedisAuthFailed, RedisTLSFailed

# What redis-py raises when Redis did not answer (as opposed to an error Redis answered with).
OUTAGES = (RedisConnectionError, RedisTimeoutError)
TLS_SIGNS = ("SSL", "_ssl.c", "certificate", "TLS", "tlsv1")


def _tls_trouble(error: Exception) -> bool:
    return any(sign in str(error) for sign in TLS_SIGNS)


def _handshake_fails(url: str) -> bool:
    """Whether a fresh connection fails the same way (a server restarting mid-connection does not)."""
    try:
        Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except RedisError as error:
        return _tls_trouble(error)
    return False


def misconfigured(error: Exception, url: str) -> InvalidSettings | None:
    """The named error when `error`, from Redis at `url`, is a configuration problem (messages mask the password)."""
    text, where = " ".join(str(error).split()), redact_url(url)
    if isinstance(error, AuthenticationError) or (
        isinstance(error, ResponseError) and text.startswith(("WRONGPASS", "NOAUTH"))
    ):
        return RedisAuthFailed(
            f"Redis at {where} refused the credentials ({text}): check the user and password in EMBEDQ_REDIS_URL "
            "and that the ACL user is on"
        )
    if _tls_trouble(error) and _handshake_fails(url):
        return RedisTLSFailed(
            f"the TLS handshake with Redis at {where} failed ({text}): check rediss://, ssl_ca_certs (the CA that "
            "signed Redis' certificate) and, for mutual TLS, ssl_certfile and ssl_keyfile"
        )
    return None


def unreachable(error: Exception, url: str) -> EmbedqError:
    """What to raise when Redis at `url` failed a call: the named setting error, else QueueUnavailable."""
    return misconfigured(error, url) or QueueUnavailable(f"Redis at {redact_url(url)} did not answer: {error}")
