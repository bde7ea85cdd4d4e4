"""An idle worker's watch on the other shards' doorbells on a Redis Cluster, where one blocking read
names keys of one slot: the worker blocks on its home shard's bells itself, and a thread per other shard
blocks on that shard's shared doorbell meanwhile. A ring found there is noted and wakes the worker through
its own bell at home, so a shard that is nobody's home (fewer workers than shards) is served at once,
not at the worker's next look of its own."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from redis import Redis
from redis.exceptions import RedisError

BELL_TTL = 60  # s, as enqueue.lua rings a worker's own bell


class DoorbellWatch:
    """Threads blocking on `doorbells` (each another shard's shared doorbell) while `waiting()` is held,
    for up to `wait` seconds a read; a ring is noted (`next_ring()`) and pushed to `wake` (the worker's own bell
    at home, which it blocks on)."""

    def __init__(self, connection: Redis, wake: str, doorbells: Sequence[str], wait: float) -> None:
        self.connection, self.wake, self.wait = connection, wake, wait
        self._waiting, self._stopped = threading.Event(), threading.Event()
        self._lock = threading.Lock()
        self._rung: list[str] = []
        for n, bell in enumerate(doorbells):
            threading.Thread(target=self._watch, args=(bell,), name=f"doorbell watch {n}", daemon=True).start()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """While the worker waits for work: the other shards' doorbells are watched."""
        self._waiting.set()
        try:
            yield
        finally:
            self._waiting.clear()

    def next_ring(self) -> str | None:
        """The doorbell that rang first of those not yet served, taken off the list (its shard is to be looked
        at now: a ring left on the list is a shard still owed a look), or None."""
        with self._lock:
            return self._rung.pop(0) if self._rung else None

    def stop(self) -> None:
        self._stopped.set()
        self._waiting.set()  # let each thread see the stop (each ends within one read)

    def _watch(self, doorbell: str) -> None:
        while not self._stopped.is_set():
            if not self._waiting.wait(self.wait) or self._stopped.is_set():
                continue
            try:
                if self.connection.blpop([doorbell], timeout=self.wait) is None:
                    continue
                with self._lock:
                    if doorbell not in self._rung:
                        self._rung.append(doorbell)
                with self.connection.pipeline(transaction=False) as pipe:  # one slot: the worker's home
                    pipe.lpush(self.wake, 1)
                    pipe.expire(self.wake, BELL_TTL)
                    pipe.execute()
            except (RedisError, OSError):  # Redis away or failing over: the worker's own loop reports it
                self._stopped.wait(self.wait)
