"""How the long-running processes (workers, supervisor) talk to a Redis that may fail them: a
connection whose every call is bounded in time, and waiting out a Redis that refuses (down, hung, or
out of memory) with exponential backoff, capped, logged once per step instead of once per try, and cut
short by a stop request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from embedq.broker.connection import sync_redis
from embedq.config.settings import ClientSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_WAIT = 0.5  # seconds; doubling up to MAX_WAIT
MAX_WAIT = 10.0
LOG_EVERY_AT_CAP = 60.0  # seconds between repeats of the same complaint once the wait is at its cap
# Seconds one Redis call may take: a worker's idle wait for its doorbell is 1 s, so 3 s leaves 2 s for
# Redis itself. A Redis that hangs is then an error within ~6 s (one quick retry for a connection that
# went stale), not a process that hangs with it and cannot stop on SIGTERM.
CALL_TIMEOUT = 3.0


class RetryUnlessStopping(Retry):
    """One immediate retry, for a connection that went stale, and none once `stop` is set: a stop
    request while Redis hangs then waits out one call's timeout, not two."""

    def __init__(self, stop: threading.Event | None) -> None:
        super().__init__(NoBackoff(), 1)
        self.stop = stop

    def __deepcopy__(self, _memo: dict[int, Any]) -> RetryUnlessStopping:
        return self  # redis-py copies its connection arguments: every copy must see the one stop event

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            stopping = self.stop is not None and self.stop.is_set()
            return not stopping and (is_retryable is None or is_retryable(error))

        return super().call_with_retry(do, fail, retryable, with_failure_count)


def connect(settings: ClientSettings, stop: threading.Event | None = None) -> Redis:
    """A connection for a process that runs for days: every call bounded, one immediate retry unless
    `stop` is set (this module's backoff, not redis-py's, waits out longer trouble)."""
    return sync_redis(
        settings,
        socket_connect_timeout=CALL_TIMEOUT,
        socket_timeout=CALL_TIMEOUT,
        retry=RetryUnlessStopping(stop),
        health_check_interval=30,
    )


class RedisBackoff:
    """One per worker loop: `failed` after each refused try (it waits), `reset` once Redis serves again."""

    def __init__(self, who: str, stop: threading.Event) -> None:
        self.who, self.stop = who, stop
        self.policy = ExponentialBackoff(cap=MAX_WAIT, base=FIRST_WAIT)
        self.failures = 0
        self.last_delay = 0.0
        self.logged_at = -LOG_EVERY_AT_CAP
        self.first_failure = 0.0
        self.last_delay = 0.0

    def failed(self, error: Exception, what: str) -> None:
        """Log (at a new step, or once a minute at the cap) and wait the step's time, or until a stop request."""
        delay = self.policy.compute(self.failures)
        now = time.monotonic()
        if self.failures == 0:
            self.first_failure = now
        if delay != self.last_delay or now - self.logged_at >= LOG_EVERY_AT_CAP:
            log.error(
                "%s: %s: Redis refused (%s: %s); try %d, retrying in %.1f s",
                self.who,
                what,
                type(error).__name__,
                error,
                self.failures + 1,
                delay,
            )
            self.logged_at = now
        self.failures += 1
        self.last_delay = delay
        self.stop.wait(delay)

    def reset(self) -> None:
        if self.failures:
            log.info(
                "%s: Redis serves again after %d refused tries over %.0f s",
                self.who,
                self.failures,
                time.monotonic() - self.first_failure,
            )
        self.failures = 0
        self.last_delay = 0.0
