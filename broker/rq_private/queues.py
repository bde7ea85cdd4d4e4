"""The rq queues of a queue's lanes, on msgpack."""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq import Queue

from embedq.broker.jobs import MsgpackSerializer
from embedq.broker.lanes import LANES, Priority, lane_queue


def lane_queues(queue: str, connection: Redis, **options: Any) -> dict[Priority, Queue]:
    """The rq queue of each lane of `queue` (lanes.lane_queue), on msgpack."""
    return {
        lane: Queue(lane_queue(queue, lane), connection=connection, serializer=MsgpackSerializer, **options)
        for lane in LANES
    }
