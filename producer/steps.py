"""The protocol between the clients' I/O-free steps (waiting.py) and their two drivers (client.py over
redis-py, aio.py over redis.asyncio). A step yields a `Send` (commands for one pipeline) or a `Pause`
and is sent back the replies; `interpreted` stands between them and says, once for both drivers, what
a raw reply means: a script Redis forgot (load it, send again), a write refused at maxmemory, an
outage, a setting to fix. A driver only moves commands and replies: `advance`, then its own I/O."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from redis.exceptions import NoScriptError, OutOfMemoryError

from embedq.broker.failures import misconfigured
from embedq.broker.scripts import by_sha
from embedq.errors import QueueUnavailable, RedisOutOfMemory

T = TypeVar("T")
Command = tuple[str, tuple[Any, ...], dict[str, Any]]  # a redis-py pipeline method's name, args, kwargs


@dataclass(frozen=True)
class Send:
    """Send these commands in one pipeline: to the queue's Redis, or to the cache's own (CACHE_URL), whose
    replies reach the step as they are (an error or an Outage there is a cache miss, never a failure)."""

    commands: list[Command]
    to: Literal["queue", "cache"] = "queue"


@dataclass(frozen=True)
class Pause:
    seconds: float


@dataclass(frozen=True)
class Outage:
    """What a step is sent back when Redis did not answer."""

    error: Exception
    where: str  # the Redis URL, password masked

    def unavailable(self) -> QueueUnavailable:
        return QueueUnavailable(f"Redis at {self.where} did not answer: {self.error}")


@dataclass(frozen=True)
class Finished(Generic[T]):
    value: T


Steps = Generator[Send | Pause, Any, T]


def advance(steps: Steps[T], reply: Any) -> Send | Pause | Finished[T]:
    """The next thing `steps` asks for, given the reply to the last; Finished with its result at the end."""
    try:
        return steps.send(reply)
    except StopIteration as done:
        return Finished(done.value)


def interpreted(steps: Steps[T], redis_url: str) -> Steps[T]:
    """`steps` for a driver that sends back raw replies: a pipeline's replies with errors in place
    (`raise_on_error=False`), or an Outage. Scripts Redis lost (a restart) are loaded and the commands
    sent again; a write refused at maxmemory raises RedisOutOfMemory (with Redis' figures, where INFO
    is allowed); refused credentials or TLS raise the named setting error; other errors raise as
    redis-py's execute() would raise them."""
    reply: Any = None
    while not isinstance(step := advance(steps, reply), Finished):
        reply = yield step
        if isinstance(step, Pause) or step.to == "cache":
            continue
        if not isinstance(reply, Outage) and any(isinstance(each, NoScriptError) for each in reply):
            loads = script_loads(step)
            reply = yield Send([*loads, *step.commands])
            reply = reply if isinstance(reply, Outage) else reply[len(loads) :]
        if isinstance(reply, Outage):
            if named := misconfigured(reply.error, redis_url):
                raise named from None  # not an outage to wait out
            continue
        if any(isinstance(each, OutOfMemoryError) for each in reply):  # refused at its first write: none ran
            memory = yield Send([("info", ("memory",), {})])
            raise out_of_memory(None if isinstance(memory, Outage) or isinstance(memory[0], Exception) else memory[0])
        reply = raise_first_error(reply)
    return step.value


def script_loads(send: Send) -> list[Command]:
    """SCRIPT LOAD for each script `send` calls by its SHA."""
    return [("script_load", (by_sha(args[0]).source,), {}) for name, args, _ in send.commands if name == "evalsha"]


def out_of_memory(memory: dict[str, Any] | None) -> RedisOutOfMemory:
    """What to say when Redis refused a write at its maxmemory; `memory`: its INFO memory, where readable."""
    figures = ""
    if memory and memory.get("maxmemory"):
        figures = (
            f" (used {memory.get('used_memory_human')} of maxmemory {memory.get('maxmemory_human')}, "
            f"policy {memory.get('maxmemory_policy')})"
        )
    return RedisOutOfMemory(
        f"Redis is out of memory{figures} and refused the write: nothing was enqueued. Free memory (fewer "
        "queued jobs, a shorter RESULT_TTL) or raise maxmemory"
    )


def raise_first_error(replies: list[Any]) -> list[Any]:
    """A pipeline's replies, as `execute()` would give them: its first error raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
