"""`embedq supervise`: keep N worker processes alive. A child that dies is restarted with
backoff; a child that crash-loops is given up on, loudly; SIGTERM or Ctrl-C stops every child
gracefully (each finishes its current job)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from redis.exceptions import RedisError

from embedq.broker.connection import redis_answers, sync_redis
from embedq.broker.keys import WORKER_FACTS_TTL, supervisor_key
from embedq.broker.shards import shards_of
from embedq.config import Settings
from embedq.worker.backoff import connect
from embedq.worker.process import worker_name_for
from embedq.worker.recovery import bury_worker
from embedq.worker.supervisor.host_lock import HostLock, still_running
from embedq.worker.supervisor.spawn import CONFIG_ERROR_EXIT, embedq_command, settings_env
from embedq.worker.supervisor.watchdog import hung

log = logging.getLogger(__name__)
T = TypeVar("T")
FACTS_REFRESH = 10.0  # seconds between refreshes of the supervisor's facts in Redis


@dataclass
class Slot:
    """One worker position: the process filling it now and its crash history."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    started_wall: float = 0.0  # unix time, for the beat file's clock
    hung: str = ""  # why the watchdog killed the process filling it
    next_start: float = 0.0
    crashes: deque[float] = field(default_factory=deque)
    quick_crashes: int = 0
    given_up: bool = False


class Supervisor:
    """Runs `workers` copies of `command` (default: `embedq worker`) until told to stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int | None = None,
        command: Sequence[str] | None = None,
        crash_limit: int = 5,
        crash_window: float = 60.0,
        stable_after: float = 30.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        poll_interval: float = 0.2,
    ):
        self.settings = settings
        self.command = list(command or embedq_command("worker", "--stop-with-parent"))
        self.beats = Path(tempfile.mkdtemp(prefix="embedq-beats-")) if command is None else None  # hung-worker watch
        self.slots = [Slot(i) for i in range(workers or settings.workers)]
        self.crash_limit = crash_limit
        self.crash_window = crash_window
        self.stable_after = stable_after
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.stop_grace = settings.job_timeout + 30.0
        self.restarts = 0
        self.recovered_jobs = 0
        self.config_errors = 0
        self.unburied: dict[str, str] = {}  # dead workers whose jobs wait for Redis to be handed back
        self.name = worker_name_for(os.getpid())
        self.facts_refreshed = 0.0
        self.stop_requests = 0
        self.stopping = threading.Event()  # set with the first stop request: no Redis retry after it
        self.told: set[int] = set()  # children sent a stop: a second one would be rq's cold shutdown
        self.env = settings_env(settings)
        self.connection = connect(settings, self.stopping)
        self.lock = HostLock(settings.redis_url, settings.queue)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; 0 after a clean stop, 1 if every slot crash-looped, CONFIG_ERROR_EXIT if
        every slot was given up and at least one on a configuration error."""
        left = self.lock.acquire()  # SupervisorRunning when another supervisor holds this queue on this host
        previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._outlive(left)
            log.info("supervisor %d: starting %d workers", os.getpid(), len(self.slots))
            while not self.stop_requests:
                now = time.monotonic()
                for slot in self.slots:
                    self._watch(slot)
                    self._reap(slot, now)
                    if not slot.given_up and slot.process is None and now >= slot.next_start:
                        self._start(slot)
                if self.unburied:
                    self._bury_dead_workers()
                if now - self.facts_refreshed > FACTS_REFRESH:
                    self._publish_facts()
                if all(slot.given_up for slot in self.slots):
                    if self.config_errors:
                        log.error("supervisor: no worker slot can run (configuration error); exiting")
                        return CONFIG_ERROR_EXIT
                    log.error("supervisor: every worker slot crash-looped; giving up")
                    return 1
                time.sleep(self.poll_interval)
            self._stop_children()
            return 0
        finally:
            self.lock.release()
            if self.beats:
                shutil.rmtree(self.beats, ignore_errors=True)
            probe = sync_redis(self.settings, socket_connect_timeout=0.5, socket_timeout=0.5)
            if redis_answers(probe):  # else the facts expire: do not wait on a Redis that hangs
                self._redis(lambda: self.connection.delete(supervisor_key(self.name)), "remove supervisor facts")
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _request_stop(self, signum: int, _frame: object) -> None:
        """Passed on to the children at once: the loop may be waiting on a Redis that hangs."""
        self.stop_requests += 1
        self.stopping.set()
        if self.stop_requests == 1:
            log.info("supervisor: %s received; stopping workers after their current jobs", signal.Signals(signum).name)
        else:  # a second request: rq's cold shutdown (the running job goes back to the queue)
            log.warning("supervisor: second stop request; interrupting current jobs")
        self._signal_children(signal.SIGTERM, again=self.stop_requests > 1)

    def _beat_file(self, slot: Slot) -> Path | None:
        return self.beats / f"slot-{slot.index}" if self.beats else None

    def _start(self, slot: Slot) -> None:
        beat = self._beat_file(slot)
        command = [*self.command, "--beat-file", str(beat)] if beat else self.command
        if beat:  # embedq's own worker command: the slots' workers spread over the queue's shards
            command += ["--home-shard", str(slot.index)]
        if beat:
            beat.unlink(missing_ok=True)  # the previous process's beats are not this one's
        # A session of its own: Ctrl-C reaches the supervisor only, which then stops children once, in order.
        slot.process = subprocess.Popen(command, env=self.env, start_new_session=True)
        slot.started_at, slot.started_wall, slot.hung = time.monotonic(), time.time(), ""
        self.lock.record(self._worker_pids())
        log.info("supervisor: worker slot %d started as pid %d", slot.index, slot.process.pid)

    def _watch(self, slot: Slot) -> None:
        """Kill a worker that is hung (watchdog.py); _reap then hands its jobs back and restarts it."""
        beat = self._beat_file(slot)
        if beat is None or slot.process is None or slot.hung or slot.process.poll() is not None:
            return
        reason = hung(beat, slot.started_wall, self.settings.heartbeat_timeout)
        if reason:
            slot.hung = reason
            log.error(
                "supervisor: worker slot %d (pid %d) is hung: %s; killing it", slot.index, slot.process.pid, reason
            )
            slot.process.kill()

    def _reap(self, slot: Slot, now: float) -> None:
        if slot.process is None or slot.process.poll() is None:
            return
        code, pid = slot.process.returncode, slot.process.pid
        lived = now - slot.started_at
        slot.process = None
        self.lock.record(self._worker_pids())
        cause = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if slot.hung:
            cause = f"hung ({slot.hung}), killed"
        self.unburied[worker_name_for(pid)] = cause
        self._bury_dead_workers()
        if code == 0:  # a warm stop asked of the worker itself (SIGTERM): not a crash; fill the slot again
            log.info(
                "supervisor: worker slot %d (pid %d) stopped cleanly (exit code 0); starting another", slot.index, pid
            )
            return
        if code == CONFIG_ERROR_EXIT:  # e.g. another model holds the queue: a restart would meet the same refusal
            slot.given_up = True
            self.config_errors += 1
            self._publish_facts()
            log.error(
                "supervisor: worker slot %d (pid %d) stopped on a configuration error (exit code %d, reason logged "
                "above); not restarting it",
                slot.index,
                pid,
                code,
            )
            return
        slot.quick_crashes = slot.quick_crashes + 1 if lived < self.stable_after else 1
        slot.crashes.append(now)
        while slot.crashes and now - slot.crashes[0] > self.crash_window:
            slot.crashes.popleft()
        if len(slot.crashes) >= self.crash_limit:
            slot.given_up = True
            log.error(
                "supervisor: worker slot %d (pid %d, %s) died %d times in %.0f s; not restarting it",
                slot.index,
                pid,
                cause,
                len(slot.crashes),
                self.crash_window,
            )
            return
        delay = min(self.backoff_max, self.backoff_base * 2 ** (slot.quick_crashes - 1))
        slot.next_start = now + delay
        self.restarts += 1
        self._publish_facts()
        log.warning(
            "supervisor: worker slot %d (pid %d) %s after %.1f s; restarting in %.2f s (restarts so far: %d)",
            slot.index,
            pid,
            cause,
            lived,
            delay,
            self.restarts,
        )

    def _worker_pids(self) -> list[int]:
        return [slot.process.pid for slot in self.slots if slot.process is not None]

    def _outlive(self, left: list[tuple[int, str]]) -> None:
        """Workers a killed supervisor left finish their pass and stop by themselves (--stop-with-parent):
        wait for them, so this host never runs twice the workers; kill any still running after the stop
        grace; then hand back whatever they held."""
        if not left:
            return
        log.warning(
            "supervisor: %d workers of a previous supervisor still run (pids %s); waiting for them to finish",
            len(left),
            ", ".join(str(pid) for pid, _ in left),
        )
        deadline = time.monotonic() + self.stop_grace
        while (alive := [pid for pid, start in left if still_running(pid, start)]) and time.monotonic() < deadline:
            if self.stop_requests:
                return
            time.sleep(self.poll_interval)
        for pid in alive:
            log.error("supervisor: worker pid %d of a previous supervisor still busy; killing it", pid)
            os.kill(pid, signal.SIGKILL)
        for pid, _ in left:
            self.unburied[worker_name_for(pid)] = "its supervisor was killed"
        self._bury_dead_workers()

    def _bury_dead_workers(self) -> None:
        """Hand back the jobs of dead children; what fails (Redis away) is tried again next round."""
        for name, cause in list(self.unburied.items()):
            recovered = self._redis(
                partial(bury_worker, self.connection, name, cause, shards_of(self.settings)),
                f"hand back the jobs of {name}",
            )
            if recovered is not None:
                self.recovered_jobs += len(recovered)
                del self.unburied[name]

    def _redis(self, action: Callable[[], T], what: str) -> T | None:
        """Redis is a helper here, not a dependency: when it is away, supervising goes on."""
        try:
            return action()
        except RedisError as error:
            log.warning("supervisor: could not %s (Redis: %s)", what, error)
            return None

    def _publish_facts(self) -> None:
        """What `embedq stats` shows of this supervisor; kept alive while it runs."""
        self.facts_refreshed = time.monotonic()
        key = supervisor_key(self.name)
        facts: dict[Any, Any] = {
            "pid": os.getpid(),
            "queue": self.settings.queue,
            "workers": len(self.slots),
            "restarts": self.restarts,
            "recovered_jobs": self.recovered_jobs,
            "given_up": sum(s.given_up for s in self.slots),
        }

        def write() -> None:
            with self.connection.pipeline() as pipe:
                pipe.hset(key, mapping=facts)
                pipe.expire(key, WORKER_FACTS_TTL)
                pipe.execute()

        self._redis(write, "publish supervisor facts")

    def _signal_children(self, sig: signal.Signals, *, again: bool) -> None:
        """`again=False`: only the children not sent a stop yet."""
        for slot in self.slots:
            process = slot.process
            if process is None or process.poll() is not None or (not again and process.pid in self.told):
                continue
            process.send_signal(sig)
            self.told.add(process.pid)

    def _stop_children(self) -> None:
        self._signal_children(signal.SIGTERM, again=False)  # a child started since the stop request is told now
        deadline = time.monotonic() + self.stop_grace
        for slot in self.slots:
            if slot.process is None:
                continue
            try:
                slot.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error(
                    "supervisor: worker pid %d still busy after %.0f s; killing it", slot.process.pid, self.stop_grace
                )
                slot.process.kill()
                slot.process.wait()
            code = slot.process.returncode
            how = "cleanly (exit code 0)" if code == 0 else f"with exit code {code}"
            log.info("supervisor: worker slot %d (pid %d) stopped %s", slot.index, slot.process.pid, how)
        log.info("supervisor: all workers stopped")
