"""How the supervisor tells a hung worker from a busy one, without Redis. Each worker it starts keeps a
beat file: a thread renews its mtime every second while the process runs (a SIGSTOPped process stops
beating), and the main thread writes into it when a pass starts (with the pass's timeout) and ends. Hung:
no beat for HEARTBEAT_TIMEOUT seconds, or a pass running past its timeout plus PASS_GRACE (a native
call that never returns, while the beat thread still beats: rq's SIGALRM timeout cannot stop it)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

BEAT_EVERY = 1.0  # seconds
PASS_GRACE = 30.0  # seconds past a pass's timeout before its worker is taken for hung


class Beat:
    """The worker's side."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.idle()
        threading.Thread(target=self._beat, name="embedq-beat", daemon=True).start()

    def _beat(self) -> None:
        while True:
            os.utime(self.descriptor)
            time.sleep(BEAT_EVERY)

    def passing(self, timeout: float) -> None:
        self._say(f"pass {time.time():.3f} {timeout:g}")

    def idle(self) -> None:
        self._say("idle")

    def _say(self, state: str) -> None:
        os.pwrite(self.descriptor, state.ljust(48).encode(), 0)


def hung(path: Path, since: float, heartbeat_timeout: float) -> str | None:
    """Why the worker beating into `path` (started at unix time `since`) is hung, or None. Before its first
    beat (the file not yet there), the time since it started counts as silence."""
    now = time.time()
    try:
        last = path.stat().st_mtime
        state = path.read_text().split()
    except FileNotFoundError:
        last, state = since, ["idle"]
    if now - last > heartbeat_timeout:
        return f"no heartbeat for {now - last:.0f} s (HEARTBEAT_TIMEOUT={heartbeat_timeout:g})"
    if state[:1] == ["pass"] and len(state) == 3:
        started, timeout = float(state[1]), float(state[2])
        if now - started > timeout + PASS_GRACE:
            return f"a pass running for {now - started:.0f} s, past its timeout of {timeout:g} s + {PASS_GRACE:g} s"
    return None
