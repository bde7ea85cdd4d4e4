"""The lanes of a queue: interactive (served first) and bulk, each its own rq queue."""

from __future__ import annotations

from typing import Any, Literal

from embedq.errors import InvalidInput

Lane = Literal["interactive", "bulk"]


LANES: tuple[Lane, ...] = ("interactive", "bulk")  # the order a worker looks in


def lane_queue(queue: str, lane: Lane) -> str:
    """The rq queue a lane of `queue` is: interactive is `queue` itself, bulk is `{queue}-bulk`."""
    return queue if lane == "interactive" else f"{queue}-bulk"


def check_lane(priority: Any) -> Lane:
    """The lane a caller's `priority=` names (the API's word for it); InvalidInput for any other value."""
    if priority not in LANES:
        raise InvalidInput(f"priority must be one of {', '.join(LANES)}, got {priority!r}")
    return priority  # type: ignore[no-any-return]


COUNTERS = ("jobs", "texts", "tokens", "truncated", "passes")  # per lane, in embedq:{queue}:metrics
