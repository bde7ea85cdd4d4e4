"""Submit in one round trip, all or nothing: each job's records are a copy of what rq's own enqueue
writes for a model job (records.JobTemplate, built by rq once per lane and options), and one
server-side script looks every text up in the fleet-wide cache (by its hash: broker/cache.py), checks
the lane's length and the served model's dimension and, only if both allow, writes every job (one
whose texts are all cached as finished, answered from the cache), then, if the lane was empty, rings
the worker that went idle last. Two producers can no longer both see room and together pass the lane's
limit, and a `submit_many` is never half enqueued."""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypedDict

from embedq.broker.cache import NO_CACHE, CacheUse, pack_shape, text_hashes
from embedq.broker.jobs import EMBED_TASK, EmbedRequest, new_job_id, validate_batches
from embedq.broker.keys import (
    IDLE_FOR,
    bell_prefix,
    cache_index_key,
    cache_prefix,
    cache_stats_key,
    doorbell_key,
    idle_key,
    model_key,
    waiters_key,
)
from embedq.broker.lanes import Lane, check_lane
from embedq.broker.rq_private import Queue, Retry
from embedq.broker.rq_private.records import (
    RESULT_STREAM_PREFIX,
    JobTemplate,
    finished_registry_key,
    job_key,
    job_values,
    result_stream_key,
    rq_stamp,
)
from embedq.broker.scripts import load
from embedq.broker.shards import hash_tag
from embedq.config.settings import ClientSettings
from embedq.errors import InvalidInput, NotCached, QueueFull

ENQUEUE = load("enqueue")  # sent by its SHA inside the submit's own pipeline (one round trip)
GIVEN_ARG = ENQUEUE.argv.index("given")
TEMPLATE_JOB_ID = "embedq-template-job"  # the model job rq writes once per lane and options; never sent


@dataclass(frozen=True)
class EnqueuePlan:
    """The script call that enqueues these jobs, and what to say about its reply."""

    job_ids: list[str]
    keys: list[str]
    args: list[Any]
    queue_name: str
    limit: int
    limit_name: str
    dimensions: int  # the largest asked, 0 for none
    cache: CacheUse
    lookup_at: list[tuple[int, int]]  # per job: where its hashes to look up sit in `args`, and how many

    @property
    def lookups(self) -> list[str]:
        """The hashes of the texts to look up, every job's in order."""
        return [hashed for start, count in self.lookup_at for hashed in self.args[start : start + count]]

    def with_entries(self, fingerprint: str, entries: list[bytes]) -> EnqueuePlan:
        """The plan with each hash to look up replaced by the entry found for it (b"" for a miss) in a cache
        Redis of its own, under the model `fingerprint`."""
        args, found = list(self.args), iter(entries)
        args[GIVEN_ARG] = fingerprint
        for start, count in self.lookup_at:
            args[start : start + count] = [next(found) for _ in range(count)]
        return replace(self, args=args)

    @staticmethod
    def fingerprint(reply: Any) -> str:
        """The serving model's fingerprint, as an accepted submit's reply gives it ("" for none)."""
        value = reply[4] if len(reply) > 4 else b""
        return value.decode() if isinstance(value, bytes) else str(value)

    def command(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """The script as one command of a pipeline (a client that meets NOSCRIPT loads it: steps.interpreted)."""
        ENQUEUE.check(self.keys, self.args)
        return "evalsha", (ENQUEUE.sha, len(self.keys), *self.keys, *self.args), {}

    def check(self, reply: Any) -> list[str]:
        """The job ids if the jobs were enqueued (some perhaps answered from the cache at once: finished);
        QueueFull, InvalidInput or NotCached (nothing enqueued) otherwise."""
        outcome, value = (reply[0].decode() if isinstance(reply[0], bytes) else reply[0]), int(reply[1])
        if outcome == "full":
            raise QueueFull(
                f"queue {self.queue_name!r} holds {value} jobs; {len(self.job_ids)} more would pass "
                f"{self.limit_name}={self.limit}"
            )
        if outcome == "dimensions":
            raise InvalidInput(f"dimensions={self.dimensions} is more than the model's {value}")
        if outcome == "uncached":
            raise NotCached(
                f"{value} of {len(self.job_ids)} jobs hold texts that are not in queue {self.queue_name!r}'s cache, "
                "and only the cache was to answer: nothing was enqueued"
            )
        return self.job_ids


class SubmitOptions(TypedDict, total=False):
    """What submit, submit_many, embed and embed_many take besides the texts. `instruction` formats texts
    as `Instruct: {instruction}\nQuery:{text}`; `prompt_name` picks a prompt the model defines
    (config_sentence_transformers.json, e.g. "query"); `priority`: "interactive" (served first) or
    "bulk" (its own lane and MAX_BULK_QUEUE_LENGTH; workers give it a fixed share of passes and serve
    interactive work between its micro-batches); `truncate=False`: a text over the model's maximum
    length fails its job instead of being cut."""

    instruction: str | None
    normalize: bool
    dimensions: int | None
    prompt_name: str | None
    priority: Lane
    truncate: bool
    cache: bool | CacheUse


_templates: dict[tuple[str, int, int, int, bool], JobTemplate] = {}


def job_template(queue: Queue, settings: ClientSettings) -> JobTemplate:
    """rq's commands for an embed job in `queue` with the settings' options, built by rq once."""
    key = (queue.name, settings.job_timeout, settings.result_ttl, settings.retries, settings.redis_cluster)
    if (template := _templates.get(key)) is None:
        model = Queue.prepare_data(
            EMBED_TASK,
            args=({},),
            timeout=settings.job_timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=settings.result_ttl,
            retry=Retry(max=settings.retries) if settings.retries else None,
            description="",
            meta={"texts": 0},
            job_id=TEMPLATE_JOB_ID,
        )
        template = _templates[key] = JobTemplate.build(queue, model, settings.redis_cluster)
    return template


def plan_submit(
    shards: Mapping[str, Mapping[Lane, Queue]],
    settings: ClientSettings,
    batches: Sequence[Any],
    options: SubmitOptions,
    scope: str = "",
) -> EnqueuePlan:
    """Check every batch and the priority (InvalidInput), then plan their enqueue in the lane's queue of one
    shard (no I/O). `shards`: each shard's name and lanes (broker/shards.py); `scope`: the client's cache
    scope, for a `cache` option of True."""
    wanted = dict(options)
    lane = check_lane(wanted.pop("priority", "interactive"))
    cache = cache_use(wanted.pop("cache", True), settings, scope)
    requests = validate_batches(batches, limits=settings.limits, **wanted)
    shard = pick_shard(list(shards), requests)
    return plan_enqueue(shards[shard][lane], shard, settings, requests, lane, cache)


def pick_shard(shards: Sequence[str], requests: Sequence[EmbedRequest]) -> str:
    """The shard a call's jobs all go to: chosen by its first text, so calls spread evenly over the shards
    and a text asked again meets the same shard's cache (no read of the shards' lengths)."""
    if len(shards) == 1:
        return shards[0]
    first = next((request.texts[0] for request in requests if request.texts), "")
    return shards[zlib.crc32(first.encode("utf-8", "surrogatepass")) % len(shards)]


def cache_use(asked: Any, settings: ClientSettings, scope: str) -> CacheUse:
    """What a `cache` option means with these settings (EMBEDQ_CACHE=false: off whatever is asked)."""
    if isinstance(asked, CacheUse):
        use = asked
    elif isinstance(asked, bool):
        use = CacheUse(scope=scope) if asked else NO_CACHE
    else:
        raise InvalidInput(f"cache must be a bool, got {type(asked).__name__}")
    return use if settings.cache and not use.off else replace(NO_CACHE, only=use.only)


def job_meta(request: EmbedRequest, hashes: list[str], lookups: list[str], cache: CacheUse) -> dict[str, Any]:
    """What a job's meta holds: its text count (take_pass.lua sizes passes by it); with the cache, whether
    its texts are looked up (a worker counts the misses it computes) and, unless told not to store, their
    hashes, which the worker stores its vectors under (hex: Lua's msgpack reads no binary)."""
    meta: dict[str, Any] = {"texts": len(request.texts)}
    if lookups:
        meta["looked"] = 1
    if cache.write and hashes:
        meta["cache"] = "".join(hashes)
    return meta


def plan_enqueue(
    queue: Queue,
    shard: str,
    settings: ClientSettings,
    requests: list[EmbedRequest],
    lane: Lane,
    cache: CacheUse = NO_CACHE,
) -> EnqueuePlan:
    """`queue`: the lane's rq queue of `shard` (lanes.lane_queue; the queue's name when it has one shard)."""
    tag = hash_tag(shard)
    job_ids = [new_job_id(settings.result_ttl, tag) for _ in requests]
    hashes = [
        text_hashes(request.texts, cache, request.instruction, request.prompt_name) if not cache.off else []
        for request in requests
    ]
    # truncate=False: not looked up (such a job must fail on a text over the model's length, cached or not)
    lookups = [job_hashes if cache.read and request.truncate else [] for request, job_hashes in zip(requests, hashes)]
    template = job_template(queue, settings)
    commands = template.commands(
        [
            (
                job_id,
                job_values(
                    (EMBED_TASK, None, [request.to_payload()], {}),
                    description=f"embed {len(request.texts)} texts",
                    meta=job_meta(request, job_hashes, job_lookups, cache),
                ),
            )
            for job_id, request, job_hashes, job_lookups in zip(job_ids, requests, hashes, lookups)
        ]
    )
    dimensions = max(request.dimensions or 0 for request in requests)
    limit, limit_name = (
        (settings.max_queue_length, "MAX_QUEUE_LENGTH")
        if lane == "interactive"
        else (settings.max_bulk_queue_length, "MAX_BULK_QUEUE_LENGTH")
    )
    once, per_job = len(template.once), len(template.per_job)
    args: list[Any] = [
        limit,
        len(requests),
        dimensions,
        bell_prefix(shard),
        IDLE_FOR,
        cache_prefix(shard) if cache.read and not settings.cache_url else "",
        settings.cache_ttl,
        rq_stamp(),
        settings.result_ttl,
        job_key(""),
        RESULT_STREAM_PREFIX,
        int(cache.only),
        "",  # given: set by with_entries
        once,
    ]
    for command in commands[:once]:
        args += [len(command), *command]
    lookup_at = []
    for number, (job_id, request, job_lookups) in enumerate(zip(job_ids, requests, lookups)):
        lookup_at.append((len(args) + 2, len(job_lookups)))
        args += [job_id, len(job_lookups), *job_lookups, pack_shape(request.normalize, request.dimensions), per_job]
        for command in commands[once + number * per_job : once + (number + 1) * per_job]:
            args += [len(command), *command]
    keys = [
        queue.key,
        model_key(shard),
        doorbell_key(shard),
        result_stream_key(job_ids[0]),
        waiters_key(shard),
        idle_key(shard),
        finished_registry_key(queue.name),
        cache_stats_key(shard),
        cache_index_key(shard),
    ]
    return EnqueuePlan(job_ids, keys, args, queue.name, limit, limit_name, dimensions, cache, lookup_at)
