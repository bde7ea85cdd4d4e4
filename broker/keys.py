"""Every Redis key name embedq uses, nothing else (arq's constants.py): ours under `embedq:`; rq keeps
its own `rq:*` (broker's rq surface names those). Scripts get their keys from here, never spell one."""

from __future__ import annotations

from dataclasses import dataclass

from embedq.broker.shards import hash_tag

KEY_PREFIX = "embedq:"
WORKER_KEY_PATTERN = KEY_PREFIX + "worker:*"
SUPERVISOR_KEY_PATTERN = KEY_PREFIX + "supervisor:*"
WORKER_FACTS_TTL = 90  # seconds; refreshed by every rq heartbeat, so a dead worker's facts vanish soon
# The queues any worker has claimed (a set): the gateway reads it instead of scanning the keyspace.
QUEUES_KEY = KEY_PREFIX + "queues"


def worker_key(name: str) -> str:
    return f"{KEY_PREFIX}worker:{name}"


def held_key(worker_name: str, shard: str = "") -> str:
    """The jobs a worker's current pass holds (`job_id:pass_id`), so they can be handed back if it dies;
    one per shard it takes from (with the shard's hash tag; none for an untagged queue)."""
    return f"{KEY_PREFIX}claimed:{worker_name}{hash_tag(shard)}"  # a contract: running fleets read it


DOORBELL_WAIT = 1  # seconds an idle worker blocks on its doorbells before it looks again on its own
IDLE_FOR = 2 * DOORBELL_WAIT  # seconds an idle worker stays counted (idle_key) without looking again


def doorbell_key(queue: str) -> str:
    """A list idle workers of `queue` block on; a submit into an empty lane pushes to it."""
    return f"{KEY_PREFIX}{queue}:doorbell"


def bell_prefix(queue: str) -> str:
    """The start of each worker's own doorbell key (a list; the worker's name follows): a submit into an
    empty lane rings the worker that went idle last (waiters_key) there, else the shared doorbell."""
    return f"{KEY_PREFIX}{queue}:doorbell:"


def bell_key(queue: str, worker_name: str) -> str:
    return bell_prefix(queue) + worker_name


def waiters_key(queue: str) -> str:
    """The idle workers of `queue` scored by when they went idle (kept while they stay idle): the last to
    go idle is woken first, its caches the warmest."""
    return f"{KEY_PREFIX}{queue}:waiters"


def idle_key(queue: str) -> str:
    """The workers of `queue` waiting for work, scored by when they last looked: a pass takes its share."""
    return f"{KEY_PREFIX}{queue}:idle"


def metrics_key(queue: str) -> str:
    """Counters of one queue, per lane (`{lane}:{counter}`), plus `failed_attempts`."""
    return f"{KEY_PREFIX}{queue}:metrics"


def timings_key(queue: str) -> str:
    """Histograms of one queue's job timings: `{lane}:{timing}:{bound}` counts and `{lane}:{timing}:sum`."""
    return f"{KEY_PREFIX}{queue}:timings"


def model_key(queue: str) -> str:
    """What the workers on `queue` serve (name, dim, fingerprint): lets producers check `dimensions` early
    and the cache key entries by the model's exported file and precision, not its name alone."""
    return f"{KEY_PREFIX}{queue}:model"


def cache_prefix(queue: str) -> str:
    """The start of `queue`'s cache entries' keys (strings): the serving model's fingerprint, `:` and
    the text's hash follow (broker/cache.py). Entries are per queue, as the lanes' keys are."""
    return f"{KEY_PREFIX}{queue}:cache:"


def cache_index_key(queue: str) -> str:
    """`queue`'s cache entries (fingerprint:hash) scored by when they expire: the byte budget is kept by it."""
    return f"{KEY_PREFIX}{queue}:cache-index"


def cache_stats_key(queue: str) -> str:
    """`queue`'s cache accounting and counters (a hash): bytes, entries, hits, misses, writes, trimmed,
    foreign, answered (jobs answered without a worker), and `size:{fingerprint}` (bytes an entry counts)."""
    return f"{KEY_PREFIX}{queue}:cache-stats"


def serving_key(queue: str) -> str:
    """The live claim on `queue` by one model (its name and dim), kept alive by its workers' heartbeats."""
    return f"{KEY_PREFIX}{queue}:serving"


def supervisor_key(name: str) -> str:
    return f"{KEY_PREFIX}supervisor:{name}"


# On a Redis Cluster every Batch API record carries this hash tag: its scripts and transactions span several
# of them, so they all sit in one slot (one primary; a batch's own traffic, its jobs, goes over the shards).
BATCH_TAG = "{batch-api}"


@dataclass(frozen=True)
class BatchKeys:
    """The Batch API's records (gateway/batch/files.py, batches.py); each expires after FILES_RETENTION.
    Standalone and Sentinel names are `embedq:…`; on a Cluster `embedq:{batch-api}:…` (BATCH_TAG)."""

    prefix: str = KEY_PREFIX

    @classmethod
    def of(cls, cluster: bool) -> BatchKeys:
        return cls(f"{KEY_PREFIX}{BATCH_TAG}:" if cluster else KEY_PREFIX)

    @property
    def files(self) -> str:
        """A sorted set: file id by creation time, for listing."""
        return self.prefix + "files"

    @property
    def batches(self) -> str:
        """A sorted set: batch id by creation time, for listing."""
        return self.prefix + "batches"

    @property
    def active(self) -> str:
        """A set: the batches not yet in a final status."""
        return self.prefix + "batches:active"

    @property
    def metrics(self) -> str:
        """A hash: batches ended by status, lines done by outcome."""
        return self.prefix + "batches:metrics"

    def file(self, file_id: str) -> str:
        """An uploaded or produced file's record (a hash: OpenAI's file object fields plus its owner)."""
        return f"{self.prefix}file:{file_id}"

    def batch(self, batch_id: str) -> str:
        """A batch's record (a hash: OpenAI's batch object fields, its counts and its owner)."""
        return f"{self.prefix}batch:{batch_id}"

    def lease(self, batch_id: str) -> str:
        """Which gateway drives the batch now (its instance id), with a short TTL it renews."""
        return f"{self.prefix}batch:{batch_id}:lease"

    def done(self, batch_id: str) -> str:
        """The batch's chunks whose output lines are in the file store (a set of chunk numbers)."""
        return f"{self.prefix}batch:{batch_id}:done"

    def jobs(self, batch_id: str) -> str:
        """The ids of the batch's jobs sent and not yet counted (a set): cancelled when the batch ends or is
        taken over."""
        return f"{self.prefix}batch:{batch_id}:jobs"

    def usage(self, owner: str) -> str:
        """What one key's files hold (a hash: file id -> "bytes:expires_at"), for FILES_QUOTA_BYTES."""
        return f"{self.prefix}files:usage:{owner}"
