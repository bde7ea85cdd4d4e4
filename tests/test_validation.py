"""Every input limit gives its named error before anything reaches Redis; bad settings fail at start-up."""

import os

import fakeredis
import pytest

from embedq import ClientSettings, EmbedClient, InvalidInput, InvalidSettings, QueueFull
from embedq.broker.jobs import EmbedRequest, pack_refusal, unpack_refusal, validate_request
from embedq.config import Settings
from embedq.config.settings import Limits
from embedq.errors import Refusal
from embedq.gateway.openai_shape import refused as openai_refused
from tests.conftest import lanes

pytestmark = pytest.mark.unit


@pytest.fixture
def client():
    settings = ClientSettings(queue="validation", max_texts_per_job=3, max_chars_per_text=20, max_queue_length=3)
    with EmbedClient(settings=settings, connection=fakeredis.FakeRedis()) as client:
        yield client


def test_a_text_of_exactly_the_limit_and_exactly_the_most_texts_are_accepted(client):
    client.submit(["x" * 20, "y", "z"])
    assert lanes(client)["interactive"].count == 1
    limits = Limits(max_texts_per_job=3, max_chars_per_text=20)
    payload = {"v": 1, "texts": ["x" * 20, "y", "z"]}
    assert EmbedRequest.from_payload(payload, limits).texts == ["x" * 20, "y", "z"]  # the worker's check agrees
    with pytest.raises(InvalidInput, match="MAX_CHARS_PER_TEXT=20"):
        EmbedRequest.from_payload({"v": 1, "texts": ["x" * 21]}, limits)
    with pytest.raises(InvalidInput, match="MAX_TEXTS_PER_JOB=3"):
        EmbedRequest.from_payload({"v": 1, "texts": ["a"] * 4}, limits)


@pytest.mark.parametrize(
    ("texts", "options", "message"),
    [
        ("just a string", {}, "texts must be a list of str, got str"),
        (("a", "tuple"), {}, "texts must be a list of str, got tuple"),
        ([], {}, "texts must not be empty"),
        (["ok", None], {}, r"texts\[1\] must be a str, got NoneType"),
        (["ok", 7], {}, r"texts\[1\] must be a str, got int"),
        ([b"bytes"], {}, r"texts\[0\] must be a str, got bytes"),
        (["ok", ""], {}, r"texts\[1\] is empty or whitespace only"),
        (["  \n\t"], {}, r"texts\[0\] is empty or whitespace only"),
        (["x" * 21], {}, r"texts\[0\] has 21 characters, more than MAX_CHARS_PER_TEXT=20"),
        (["a", "b", "c", "d"], {}, "texts has 4 items, more than MAX_TEXTS_PER_JOB=3"),
        (["lone \ud800 surrogate"], {}, r"texts\[0\] is not valid Unicode \(lone surrogate at position 5\)"),
        (["ok"], {"dimensions": 0}, "dimensions must be a positive int or None, got 0"),
        (["ok"], {"dimensions": -3}, "dimensions must be a positive int or None, got -3"),
        (["ok"], {"dimensions": 2.5}, "dimensions must be a positive int or None, got 2.5"),
        (["ok"], {"dimensions": True}, "dimensions must be a positive int or None, got True"),
        (["ok"], {"instruction": 5}, "instruction must be a str, got int"),
        (["ok"], {"normalize": "yes"}, "normalize must be a bool, got str"),
    ],
)
def test_bad_input_is_refused_before_enqueueing(client, texts, options, message):
    with pytest.raises(InvalidInput, match=message):
        client.submit(texts, **options)
    assert lanes(client)["interactive"].count == 0


def test_one_bad_batch_in_submit_many_enqueues_nothing(client):
    with pytest.raises(InvalidInput, match=r"texts\[0\] must be a str"):
        client.submit_many([["fine"], [None]])
    assert lanes(client)["interactive"].count == 0


def test_a_full_queue_raises_queue_full(client):
    client.submit_many([["one"], ["two"]])
    client.submit(["three"])
    with pytest.raises(QueueFull, match="holds 3 jobs; 1 more would pass MAX_QUEUE_LENGTH=3"):
        client.submit(["four"])
    assert lanes(client)["interactive"].count == 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("redis_url", "http://localhost:6379", "must start with one of redis://, rediss://, unix://"),
        ("workers", "0", "greater than or equal to 1"),
        ("max_texts_per_job", "0", "greater than or equal to 1"),
        ("providers", " , ", "must name at least one provider"),
        ("providers", "auto,CPUExecutionProvider", "'auto' cannot be combined"),
        ("pooling", "max", "Input should be '', 'mean', 'cls' or 'lasttoken'"),
    ],
)
def test_invalid_settings_fail_at_start_up_naming_the_field(monkeypatch, field, value, message):
    monkeypatch.setenv(f"EMBEDQ_{field.upper()}", value)
    with pytest.raises(InvalidSettings, match=message) as error:
        Settings.load()
    assert f"EMBEDQ_{field.upper()}" in str(error.value)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("EMBEDQ_PROVIDERS", "CoreMLExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("EMBEDQ_WORKERS", "4")
    monkeypatch.setenv("EMBEDQ_INTRA_OP_THREADS", "0")
    settings = Settings()
    assert settings.providers == ("CoreMLExecutionProvider", "CPUExecutionProvider")
    assert settings.workers == 4
    assert settings.threads_per_worker() == max(1, (os.cpu_count() or 1) // 4)


@pytest.mark.parametrize(
    ("texts", "refusal"),
    [
        (["ok", 7], Refusal("not_a_string", 1, None, "int")),
        (["ok", "fine", " "], Refusal("empty_text", 2)),
        (["x" * 21], Refusal("too_many_characters", 0, 20, 21)),
        (["ok", "lone \ud800"], Refusal("invalid_unicode", 1, None, 5)),
    ],
)
def test_a_refused_text_says_which_one_and_which_rule_as_data_that_survives_the_trip(texts, refusal):
    with pytest.raises(InvalidInput) as refused:
        validate_request(texts, limits=Limits(max_texts_per_job=3, max_chars_per_text=20))
    assert refused.value.refusal == refusal
    assert unpack_refusal(pack_refusal(refusal)) == refusal  # as a failed job carries it to the waiter
    answer = openai_refused(refusal, 40 + refusal.index).body()["error"]
    assert answer["message"].startswith(f"input[{40 + refusal.index}] ") and answer["param"] == "input"


def test_an_option_breaking_a_rule_blames_no_text_and_an_unreadable_refusal_reads_as_none():
    with pytest.raises(InvalidInput) as refused:
        validate_request(["ok"], instruction="", limits=Limits(max_texts_per_job=3, max_chars_per_text=20))
    assert refused.value.refusal is None
    assert unpack_refusal(b"\xc1") is None and unpack_refusal(pack_refusal(Refusal("no_such_rule", 0))) is None
