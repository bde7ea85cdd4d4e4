"""The rules the long-running processes recover by, each on its own: the back-off's delays while Redis
refuses, no second try of a hung call once stopping, and the host lock telling a supervisor's leftover
workers from processes that got their pids."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from embedq.broker.keys import bell_key, doorbell_key, idle_key, waiters_key
from embedq.worker.backoff import FIRST_WAIT, MAX_WAIT, RedisBackoff, RetryUnlessStopping
from embedq.worker.recovery import bury_worker
from embedq.worker.supervisor.host_lock import HostLock, started

pytestmark = pytest.mark.unit


class Waits(threading.Event):
    """A stop event that records how long the back-off asks to wait, and waits not at all."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.asked.append(float(timeout or 0))
        return False


def test_the_backoff_waits_half_a_second_then_doubles_up_to_ten_and_starts_over_after_a_reset():
    waits = Waits()
    backoff = RedisBackoff("worker test", waits)
    for _ in range(8):
        backoff.failed(RedisConnectionError("refused"), "serving")
    assert waits.asked == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert (FIRST_WAIT, MAX_WAIT) == (0.5, 10.0)
    backoff.reset()
    backoff.failed(RedisConnectionError("refused"), "serving")
    assert waits.asked[-1] == 0.5


def test_the_backoff_logs_each_new_step_once_and_stays_quiet_at_the_cap(caplog: pytest.LogCaptureFixture):
    backoff = RedisBackoff("worker test", Waits())
    with caplog.at_level(logging.ERROR, logger="embedq.worker.backoff"):
        for _ in range(20):
            backoff.failed(RedisConnectionError("refused"), "serving")
    steps = [record.getMessage().rsplit("retrying in ", 1)[1] for record in caplog.records]
    assert steps == ["0.5 s", "1.0 s", "2.0 s", "4.0 s", "8.0 s", "10.0 s"]  # then silence for a minute


def test_a_call_that_times_out_is_tried_once_more_until_a_stop_is_requested_then_not_again():
    stop = threading.Event()
    retry = RetryUnlessStopping(stop)
    tries: list[int] = []

    def hangs() -> None:
        tries.append(1)
        raise RedisTimeoutError("Timeout reading from socket")

    for stopping, expected in ((False, 2), (True, 1)):
        stop.set() if stopping else stop.clear()
        tries.clear()
        with pytest.raises(RedisTimeoutError):
            retry.call_with_retry(hangs, lambda _error: None)
        assert len(tries) == expected, f"stopping={stopping}"


@pytest.fixture
def lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> HostLock:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return HostLock("redis://127.0.0.1:6379/0", "queue")


def test_a_leftover_worker_still_running_is_found_by_its_pid_and_start_time(lock: HostLock):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        lock.path.write_text(f"1 {child.pid}:{started(child.pid)}")
        assert lock.acquire() == [(child.pid, started(child.pid))]
    finally:
        child.kill()
        child.wait()
        lock.release()


def test_a_reused_pid_is_taken_for_gone_not_for_the_old_supervisors_worker(lock: HostLock):
    mine = os.getpid()  # alive, but started at another time than the record says: the pid was reused
    lock.path.write_text(f"1 {mine}:{int(started(mine)) + 1}")
    assert lock.acquire() == []
    lock.release()


def test_a_pid_no_process_has_is_gone(lock: HostLock):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    lock.path.write_text(f"1 {child.pid}:12345")
    assert lock.acquire() == []
    lock.release()


def test_burying_a_worker_takes_it_out_of_the_idle_workers_and_wakes_another_for_what_was_rung_for_it():
    redis = fakeredis.FakeRedis()
    redis.zadd(idle_key("q"), {"dead": 1.0, "alive": 2.0})
    redis.zadd(waiters_key("q"), {"dead": 1.0})
    redis.lpush(bell_key("q", "dead"), 1)
    assert bury_worker(redis, "dead", "killed", ["q"]) == []
    assert redis.zrange(idle_key("q"), 0, -1) == [b"alive"] and not redis.exists(waiters_key("q"))
    assert not redis.exists(bell_key("q", "dead")) and redis.llen(doorbell_key("q")) == 1
