"""One model per queue: a worker of another model (name or dimension) is refused on a queue that live
workers already serve, atomically, and the supervisor reports the refusal instead of restarting it."""

import shutil
import subprocess
import threading
import time
import uuid

import pytest

from embedq.broker.keys import QUEUES_KEY, model_key, serving_key
from embedq.local.service import LocalService
from embedq.worker.model_claim import ModelConflict, claim_queue
from embedq.worker.supervisor.spawn import CONFIG_ERROR_EXIT, embedq_command, settings_env
from tests.conftest import make_settings


def test_two_models_claiming_one_queue_at_the_same_moment_cannot_both_win(redis):
    queue = f"claim-{uuid.uuid4().hex[:8]}"
    start = threading.Barrier(8)
    outcomes: dict[int, str] = {}

    def claim(attempt: int) -> None:
        model = "model-a" if attempt % 2 else "model-b"
        start.wait()
        try:
            claim_queue(redis, queue, model, 384, ttl=30)
            outcomes[attempt] = model
        except ModelConflict:
            outcomes[attempt] = "refused"

    threads = [threading.Thread(target=claim, args=(attempt,)) for attempt in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = {outcome for outcome in outcomes.values() if outcome != "refused"}
    assert len(winners) == 1, outcomes
    assert list(outcomes.values()).count("refused") == 4  # every claim of the other model
    assert redis.hget(model_key(queue), "name").decode() in winners
    assert redis.sismember(QUEUES_KEY, queue)  # what the gateway reads instead of scanning the keyspace
    assert 0 < redis.ttl(serving_key(queue)) <= 30


def test_the_same_model_with_another_dimension_is_refused_and_the_claim_lapses(redis):
    queue = f"claim-{uuid.uuid4().hex[:8]}"
    claim_queue(redis, queue, "m", 384, ttl=1)
    claim_queue(redis, queue, "m", 384, ttl=1)  # more workers of the same model join
    refusal = r"served by live workers of m \(dim 384\); this worker serves m \(dim 256\)"
    with pytest.raises(ModelConflict, match=refusal):
        claim_queue(redis, queue, "m", 256, ttl=1)
    time.sleep(1.1)  # the last worker of m stopped heartbeating: the queue is free
    claim_queue(redis, queue, "m", 256, ttl=1)


@pytest.fixture
def serving(redis_url, model_dir, tmp_path):
    """A queue served by a real worker of the default model."""
    settings = make_settings(redis_url, model_dir, workers=1)
    with LocalService(settings, workers=1, log_path=tmp_path / "serving.log") as service:
        yield service


@pytest.fixture
def other_model(model_dir, tmp_path):
    """Another model of the same dimension: the same graph under another name, as a user's fine-tune would be."""
    directory = tmp_path / "my-finetune"
    shutil.copytree(model_dir, directory)
    return directory


def test_a_worker_of_another_model_is_refused_with_both_models_named(serving, other_model):
    env = settings_env(serving.settings.model_copy(update={"model_dir": other_model}))
    run = subprocess.run([*embedq_command("worker")], env=env, capture_output=True, text=True, timeout=180)
    assert run.returncode == CONFIG_ERROR_EXIT, run.stderr[-2000:]
    assert "ModelConflict" in run.stderr
    assert "all-MiniLM-L6-v2 (dim 384)" in run.stderr and "my-finetune (dim 384)" in run.stderr
    assert [w["model"] for w in serving.live_workers()] == ["all-MiniLM-L6-v2"]
    job = serving.client.submit(["still served"])
    assert serving.client.wait(job, timeout=60).model == "all-MiniLM-L6-v2"


def test_the_supervisor_reports_a_refused_worker_and_does_not_restart_it(serving, other_model, tmp_path):
    env = settings_env(serving.settings.model_copy(update={"model_dir": other_model, "workers": 2}))
    env["TMPDIR"] = str(tmp_path)  # its own host lock: as a supervisor on another machine would be
    run = subprocess.run(
        [*embedq_command("supervise", "--workers", "2")], env=env, capture_output=True, text=True, timeout=240
    )
    log = run.stdout + run.stderr
    assert run.returncode == CONFIG_ERROR_EXIT, log[-3000:]
    assert log.count("started as pid") == 2, log[-3000:]  # each slot once: no restart loop
    assert log.count("stopped on a configuration error") == 2
    assert "no worker slot can run (configuration error)" in log
