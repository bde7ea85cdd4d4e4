"""The whole service on this machine, as a context manager: Redis (a private one if none answers),
the prepared model, `embedq supervise` as a child process, and a client on the same queue.
Used by `embedq demo`, the benchmarks and the tests."""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from embedq import EmbedClient
from embedq.broker.connection import redis_answers
from embedq.config import Settings
from embedq.local.redis_server import LocalServiceError, RedisServer
from embedq.worker.supervisor.spawn import embedq_command, settings_env

READY_TIMEOUT = 180.0


class LocalService:
    def __init__(self, settings: Settings, *, workers: int | None = None, log_path: Path | None = None):
        self.requested = settings
        self.workers = workers or settings.workers
        self.log_path = log_path
        self.settings = settings
        self.private_redis: RedisServer | None = None
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.client: EmbedClient | None = None
        self._stack = ExitStack()

    def __enter__(self) -> LocalService:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        url = self.requested.redis_url
        if not redis_answers(url):
            self.private_redis = RedisServer().start()
            url = self.private_redis.url
        self.settings = self.requested.model_copy(update={"redis_url": url, "workers": self.workers})
        from embedq.worker.model.export import is_prepared, prepare_default

        if not is_prepared(self.settings.model_dir):
            prepare_default(self.settings.model_dir)
        log: IO[bytes] | None = self._stack.enter_context(self.log_path.open("wb")) if self.log_path else None
        self.supervisor = subprocess.Popen(
            embedq_command("supervise", "--workers", str(self.workers)),
            env=settings_env(self.settings),
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
        )
        self.client = EmbedClient(settings=self.settings)
        self.wait_for_workers(self.workers)

    def live_workers(self) -> list[dict[str, str]]:
        assert self.client is not None
        workers: list[dict[str, str]] = self.client.stats()["workers"]
        return workers

    def wait_for_workers(
        self, count: int, exclude_pids: frozenset[str] = frozenset(), timeout: float = READY_TIMEOUT
    ) -> list[dict[str, str]]:
        """Block until `count` workers (other than `exclude_pids`) have loaded the model and listen."""
        deadline = time.monotonic() + timeout
        while True:
            if self.supervisor is None or self.supervisor.poll() is not None:
                code = self.supervisor.returncode if self.supervisor is not None else None
                raise LocalServiceError(f"the supervisor exited early (exit code {code}); it said: {self.last_words()}")
            alive = [w for w in self.live_workers() if w.get("pid") not in exclude_pids]
            if len(alive) >= count:
                return alive
            if time.monotonic() > deadline:
                raise LocalServiceError(
                    f"{count} workers were not ready within {timeout:.0f} s; the supervisor said: {self.last_words()}"
                )
            time.sleep(0.1)

    def last_words(self, lines: int = 8) -> str:
        """The end of the supervisor's log, for an error message."""
        return " | ".join(self.output().strip().splitlines()[-lines:]) or "(nothing)"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> int | None:
        """SIGTERM the supervisor (workers finish their jobs); its exit code, None if it never started."""
        code = None
        if self.supervisor is not None:
            if self.supervisor.poll() is None:
                self.supervisor.send_signal(signal.SIGTERM)
            code = self.supervisor.wait(timeout=self.settings.job_timeout + 60)
            self.supervisor = None
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.private_redis is not None:
            self.private_redis.cleanup()
            self.private_redis = None
        self._stack.close()
        return code
