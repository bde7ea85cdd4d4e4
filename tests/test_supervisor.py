"""The supervisor on its own: restart with backoff, give up on a crash loop and say so."""

import logging
import sys

from embedq.worker.supervisor.supervisor import Supervisor
from tests.conftest import make_settings


def test_a_crash_looping_worker_is_given_up_and_the_supervisor_says_so(redis_url, model_dir, caplog):
    crashing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    supervisor = Supervisor(
        make_settings(redis_url, model_dir),
        workers=1,
        command=crashing,
        crash_limit=3,
        backoff_base=0.01,
        poll_interval=0.01,
    )
    with caplog.at_level(logging.INFO, logger="embedq.worker.supervisor"):
        assert supervisor.run() == 1
    assert supervisor.restarts == 2
    assert "exit code 3" in caplog.text
    assert "died 3 times in 60 s; not restarting it" in caplog.text
    assert "every worker slot crash-looped; giving up" in caplog.text


def test_backoff_doubles_for_quick_crashes(redis_url, model_dir, caplog):
    crashing = [sys.executable, "-c", "import sys; sys.exit(1)"]
    supervisor = Supervisor(
        make_settings(redis_url, model_dir),
        workers=1,
        command=crashing,
        crash_limit=4,
        backoff_base=0.05,
        poll_interval=0.01,
    )
    with caplog.at_level(logging.WARNING, logger="embedq.worker.supervisor"):
        supervisor.run()
    delays = [
        line.split("restarting in ")[1].split(" s")[0] for line in caplog.text.splitlines() if "restarting in" in line
    ]
    assert delays == ["0.05", "0.10", "0.20"]
