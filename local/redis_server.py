"""Find a Redis that answers, or start a private redis-server on a free loopback port (demo, tests)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

from embedq.errors import EmbedqError


class LocalServiceError(EmbedqError):
    """The service on this machine (demo, benchmarks, tests) could not be started; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process that keeps nothing on disk."""

    def __init__(self, port: int | None = None, *extra_args: str):
        binary = shutil.which("redis-server")
        if binary is None:
            raise LocalServiceError(
                "no Redis answers and redis-server is not installed (Debian: apt-get install redis-server)"
            )
        self.port = port or free_port()
        self.directory = tempfile.TemporaryDirectory(prefix="embedq-redis-")
        self.args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self.directory.name,
            *extra_args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalServiceError(f"redis-server exited with code {self.process.returncode} on port {self.port}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise LocalServiceError(f"redis-server did not answer on port {self.port} within {timeout:g} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        self.directory.cleanup()
