"""The rq queues of a queue's lanes, on msgpack."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from rq import Queue

from embedq.broker.jobs import MsgpackSerializer
from embedq.broker.lanes import LANES, Lane, lane_queue


def job_builders(shards: Sequence[str]) -> dict[str, dict[Lane, Queue]]:
    """Each shard's lane queues that only build jobs for the caller to send (rq's Queue wants a connection
    object): their client never opens a connection."""
    return shard_lanes(shards, Redis())


def shard_lanes(shards: Sequence[str], connection: Redis) -> dict[str, dict[Lane, Queue]]:
    """Each shard's name (broker/shards.shards_of) and the rq queues of its lanes."""
    return {name: lane_queues(name, connection) for name in shards}


# rq asks Redis its version (INFO) before its first enqueue and writes the same commands for every
# version from 6.0.6 on; embedq needs a newer Redis anyway (LPOS, XREAD BLOCK), so it is not asked.
REDIS_VERSION_FLOOR = (6, 2, 0)


def lane_queues(queue: str, connection: Redis, **options: Any) -> dict[Lane, Queue]:
    """The rq queue of each lane of `queue` (lanes.lane_queue), on msgpack."""
    lanes = {
        lane: Queue(lane_queue(queue, lane), connection=connection, serializer=MsgpackSerializer, **options)
        for lane in LANES
    }
    for rq_queue in lanes.values():
        rq_queue.redis_server_version = REDIS_VERSION_FLOOR
    return lanes
