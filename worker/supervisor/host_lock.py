"""One supervisor per queue (and Redis) on a host. The lock is a file held with flock, which the kernel
releases when its holder dies, even by SIGKILL; the file lists the holder's worker pids, so the next
supervisor knows which workers a killed one left behind (they stop by themselves after their pass:
`embedq worker --stop-with-parent`)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

from embedq.config.settings import redact_url
from embedq.errors import InvalidSettings


class SupervisorRunning(InvalidSettings):
    """Another supervisor already runs this queue on this host: a second one would double the workers."""


def started(pid: int) -> str:
    """When `pid` started (clock ticks since boot, from /proc), so a pid the kernel reused is not taken for
    the process it named; "" where there is no /proc (macOS) or no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def still_running(pid: int, start: str) -> bool:
    """Whether the process recorded as (`pid`, `start`) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or started(pid) == start


class HostLock:
    def __init__(self, redis_url: str, queue: str) -> None:
        where = hashlib.sha1(redact_url(redis_url).encode()).hexdigest()[:10]
        self.path = Path(tempfile.gettempdir()) / f"embedq-supervise-{queue}-{where}.lock"
        self.queue = queue
        self.file: int | None = None

    def acquire(self) -> list[tuple[int, str]]:
        """Take the lock (SupervisorRunning if held); the workers a previous holder left that still run,
        as (pid, start)."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 4096, 0).split()[:1]
            os.close(descriptor)
            raise SupervisorRunning(
                f"another embedq supervisor (pid {holder[0].decode() if holder else '?'}) runs queue {self.queue!r} "
                "on this host; a second one would double the workers: scale with EMBEDQ_WORKERS or on another host"
            ) from None
        self.file = descriptor
        left = [entry.decode().partition(":") for entry in os.pread(descriptor, 4096, 0).split()[1:]]
        return [(int(pid), start) for pid, _, start in left if still_running(int(pid), start)]

    def record(self, workers: list[int]) -> None:
        """This supervisor's pid, then its workers' as pid:start."""
        if self.file is not None:
            entries = [str(os.getpid()), *(f"{pid}:{started(pid)}" for pid in workers)]
            os.ftruncate(self.file, 0)
            os.pwrite(self.file, " ".join(entries).encode(), 0)

    def release(self) -> None:
        if self.file is not None:
            os.ftruncate(self.file, 0)
            os.close(self.file)  # closing drops the flock
            self.file = None
