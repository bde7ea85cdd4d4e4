"""The wire format and key layout, on their own: what producers and workers of any version exchange."""

import msgpack
import numpy as np
import pytest

from embedq import EmbedResult, InvalidInput
from embedq.broker import keys
from embedq.broker.histograms import timing_bucket, timing_increments
from embedq.broker.jobs import EMBED_TASK, EmbedRequest, MsgpackSerializer, pack_result, unpack_result, validate_request
from embedq.broker.lanes import LANES, check_lane, lane_queue
from embedq.config.settings import Limits

pytestmark = pytest.mark.unit
LIMITS = Limits(max_texts_per_job=4, max_chars_per_text=50)


def test_every_key_of_ours_is_under_embedq_and_per_queue_where_it_counts():
    assert keys.metrics_key("q1") == "embedq:q1:metrics"
    assert keys.timings_key("q1") == "embedq:q1:timings"
    assert keys.model_key("q1") == "embedq:q1:model"
    assert keys.worker_key("host.7") == "embedq:worker:host.7"
    assert keys.supervisor_key("host.9") == "embedq:supervisor:host.9"
    assert keys.held_key("host.7") == "embedq:claimed:host.7"
    assert keys.doorbell_key("q1") == "embedq:q1:doorbell"
    assert keys.serving_key("q1") == "embedq:q1:serving"
    assert keys.QUEUES_KEY == "embedq:queues"
    assert keys.metrics_key("a") != keys.metrics_key("b")


def test_a_request_survives_the_payload_round_trip():
    request = EmbedRequest(["first", "second"], instruction=None, normalize=False, dimensions=8, prompt_name="query")
    wire = MsgpackSerializer.dumps(request.to_payload())
    assert EmbedRequest.from_payload(MsgpackSerializer.loads(wire), LIMITS) == request


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "job payload must be a map, got list"),
        ({"v": 2, "texts": ["a"]}, "job payload version must be 1, got 2"),
        ({"v": 1, "texts": ["a"], "extra": 1}, r"unknown fields: \['extra'\]"),
        (
            {"v": 1, "texts": ["a"], "instruction": "x", "prompt_name": "query"},
            "give instruction or prompt_name, not both",
        ),
    ],
)
def test_off_schema_payloads_are_named(payload, message):
    with pytest.raises(InvalidInput, match=message):
        EmbedRequest.from_payload(payload, LIMITS)


def test_a_result_round_trips_as_little_endian_float32():
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    result = EmbedResult("j1", vectors, "m", 3, {"texts": 2, "tokens": 9, "truncated": 0}, {"total_ms": 1.5}, "host.1")
    data = pack_result(result)
    assert msgpack.unpackb(data)["vectors"] == vectors.astype("<f4").tobytes()
    back = unpack_result(data)
    assert back.embeddings.dtype == np.float32
    np.testing.assert_array_equal(back.embeddings, vectors)
    assert (back.job_id, back.model, back.dim, back.usage, back.timings, back.worker) == (
        "j1",
        "m",
        3,
        result.usage,
        result.timings,
        "host.1",
    )


def test_the_largest_valid_job_fits_the_payload_limit():
    request = EmbedRequest(["\U0001f642" * LIMITS.max_chars_per_text] * LIMITS.max_texts_per_job)
    job = MsgpackSerializer.dumps([EMBED_TASK, None, [request.to_payload()], {}])
    assert len(job) <= LIMITS.max_payload_bytes


def test_each_lane_is_an_rq_queue_of_its_own_and_an_unknown_priority_is_named():
    assert [lane_queue("q1", lane) for lane in LANES] == ["q1", "q1-bulk"]
    with pytest.raises(InvalidInput, match="priority must be one of interactive, bulk, got 'urgent'"):
        check_lane("urgent")


@pytest.mark.parametrize(
    ("ms", "field"),
    [(0.2, "bulk:queue_ms:1"), (1, "bulk:queue_ms:1"), (3.1, "bulk:queue_ms:5"), (59_999, "bulk:queue_ms:60000")],
)
def test_a_timing_counts_in_the_first_bucket_at_or_above_it(ms, field):
    assert timing_bucket("bulk", "queue_ms", ms) == field


def test_a_timing_past_the_last_bound_counts_in_inf():
    assert timing_bucket("interactive", "total_ms", 1e9) == "interactive:total_ms:inf"


def test_a_pass_adds_a_count_per_bucket_and_the_sums():
    added = timing_increments("bulk", [{"queue_ms": 0.5}, {"queue_ms": 0.75}, {"queue_ms": 3.0}])
    assert added == {"bulk:queue_ms:1": 2, "bulk:queue_ms:5": 1, "bulk:queue_ms:sum": pytest.approx(4.25)}


def test_truncate_false_travels_in_the_payload_and_the_default_payload_is_unchanged():
    default = validate_request(["a"], limits=LIMITS).to_payload()
    assert "truncate" not in default  # what workers before the gateway read
    strict = validate_request(["a"], truncate=False, limits=LIMITS)
    assert EmbedRequest.from_payload(strict.to_payload(), LIMITS).truncate is False
    with pytest.raises(InvalidInput, match="truncate must be a bool"):
        validate_request(["a"], truncate="no", limits=LIMITS)
