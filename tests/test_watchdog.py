"""The supervisor's hung-worker rule (worker/supervisor/watchdog.py) on beat files written by hand."""

import os
import time

import pytest

from embedq.worker.supervisor.watchdog import PASS_GRACE, hung

pytestmark = pytest.mark.unit


def test_silence_and_a_pass_past_its_timeout_are_hung_a_long_pass_within_it_is_not(tmp_path):
    beat = tmp_path / "slot-0"
    assert hung(beat, time.time(), 5) is None  # started, no beat yet
    assert "no heartbeat for 9 s" in (hung(beat, time.time() - 9, 5) or "")
    beat.write_text(f"pass {time.time() - 50:.3f} 60")
    assert hung(beat, 0, 5) is None  # beating, inside its timeout
    beat.write_text(f"pass {time.time() - 60 - PASS_GRACE - 1:.3f} 60")
    assert "past its timeout of 60 s" in (hung(beat, 0, 5) or "")  # a native call that never returns
    os.utime(beat, (time.time() - 6, time.time() - 6))
    assert "no heartbeat" in (hung(beat, 0, 5) or "")


def test_stats_show_a_worker_rq_has_not_heard_from_and_the_jobs_it_holds():
    from datetime import UTC, datetime, timedelta

    import fakeredis
    from rq.utils import utcformat

    from embedq.broker.keys import held_key
    from embedq.producer.stats import cache_stats, format_stats, with_silence

    connection = fakeredis.FakeRedis()
    connection.hset("rq:worker:host.7", "last_heartbeat", utcformat(datetime.now(UTC) - timedelta(seconds=120)))
    connection.sadd(held_key("host.7"), "job1:exec", "job2:exec")
    (worker,) = with_silence(connection, [{"name": "host.7"}], ["q"])
    assert 119 <= worker["silent_seconds"] <= 125 and worker["holding"] == 2
    stats = {"queue": "q", "queued": 0, "running": 2, "failed": 0, "workers": [worker], "supervisors": []}
    stats |= {"counters": {}, "lanes": {}, "cache": cache_stats(connection, "q")}
    assert "SILENT for 12" in format_stats(stats) and "holding 2 jobs" in format_stats(stats)
