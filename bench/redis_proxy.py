"""A TCP proxy that delays each direction by a fixed time: Redis "on another host" on one machine,
without root or netem. Each direction is a delay line (a reader thread stamps every chunk, a writer
thread sends it once its time has come), so the delay does not throttle throughput. time.sleep,
not asyncio: asyncio's timers round up to 1 ms."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time


class DelayProxy:
    """Listens on a free loopback port; every connection is forwarded to `target_port` with
    `one_way_s` added in each direction (a round trip costs 2 × one_way_s more)."""

    def __init__(self, target_port: int, one_way_s: float):
        self.target_port = target_port
        self.one_way_s = one_way_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()

    def start(self) -> DelayProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._line(client, upstream)
            self._line(upstream, client)

    def _line(self, source: socket.socket, sink: socket.socket) -> None:
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def read() -> None:
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                chunks.put((time.perf_counter() + self.one_way_s, data))
                if not data:
                    return

        def write() -> None:
            while True:
                due, data = chunks.get()
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        sink.shutdown(socket.SHUT_WR)
                    return
                try:
                    sink.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()
