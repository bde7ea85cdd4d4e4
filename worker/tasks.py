"""The job class embedq's workers run, and the function its jobs name.

EmbedJob makes sure that nothing else can run: rq would otherwise import and call whatever
function name a job hash carries. embedq's workers never call the function: they read each job's
request (EmbedJob.request) and embed a whole pass of jobs at once (worker/process.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from embedq.broker.jobs import EMBED_TASK, EmbedRequest, MsgpackSerializer
from embedq.broker.rq_private.hardening import OVERSIZED, GuardedJob, StoredCall
from embedq.config.settings import ClientSettings, Limits
from embedq.errors import EmbedqError, InvalidInput

UNREADABLE = "<unreadable payload>"
WHY = {"StackError": "nested deeper than msgpack's stack allows"}  # msgpack raises it with no message
# Jobs enqueued by embedq 0.1 name the task by its old module path: accepted until the next release.
LEGACY_TASK_NAMES = ("worker.tasks.embed",)
TASK_NAMES = (EMBED_TASK, *LEGACY_TASK_NAMES)


class ForbiddenTask(EmbedqError):
    """A job names a function other than the embed task; it is refused, nothing is imported."""


class EmbedJob(GuardedJob):
    """An rq Job that can only ever be an embed request: no import by name, no callbacks, and a
    payload that must be one msgpack map under the size limit."""

    limits: ClassVar[Limits] = ClientSettings.model_construct().limits  # the worker sets its own: configure()
    data_limit = limits.max_payload_bytes
    payload_error: InvalidInput | None = None

    def read_call(self, data: bytes) -> StoredCall:
        """Parse the stored job; never raises: an unusable payload is kept as `payload_error`,
        which `func` raises."""
        try:
            return self._parse(data)
        except InvalidInput as error:
            self.payload_error = error
            return UNREADABLE, None, [], {}

    @classmethod
    def configure(cls, limits: Limits) -> None:
        """The worker's limits: payloads over them are refused, and decompressed no further."""
        cls.limits, cls.data_limit = limits, limits.max_payload_bytes

    def _parse(self, data: bytes) -> StoredCall:
        limit = self.limits.max_payload_bytes
        if data.startswith(OVERSIZED):
            raise InvalidInput(
                f"job data is {data[len(OVERSIZED) :].decode()} bytes in Redis, more than the {limit}-byte payload "
                "limit allows: refused unread"
            )
        if len(data) > limit:
            raise InvalidInput(f"job payload is more than the {limit}-byte limit (read no further)")
        try:
            func_name, instance, args, kwargs = MsgpackSerializer.loads(data)
        except Exception as error:
            why = str(error) or WHY.get(type(error).__name__, "no reason given")
            raise InvalidInput(
                f"job payload is not a msgpack embed job (pickle and other formats are refused): "
                f"{type(error).__name__}: {why}"
            ) from None
        if not isinstance(args, list) or len(args) != 1 or kwargs:
            raise InvalidInput("job payload must carry exactly one positional argument, the request map")
        return func_name, instance, args, {}

    @property
    def func(self) -> Callable[[Any], dict[str, Any]]:
        name = self.func_name  # parses the payload, once
        if self.payload_error is not None:
            raise self.payload_error
        if name not in TASK_NAMES or self.instance is not None:
            raise ForbiddenTask(
                f"refusing job {self.id}: it names {self.func_name!r}; this worker runs only {EMBED_TASK}"
            )
        return embed

    def request(self) -> EmbedRequest:
        """The job's request, checked as the client checked it; InvalidInput or ForbiddenTask."""
        self.func  # noqa: B018 - refuses bad payloads and other functions
        return EmbedRequest.from_payload(self.args[0], self.limits)


def embed(payload: Any) -> dict[str, Any]:
    """The function embedq jobs name. A plain `rq worker` that takes one fails it here, saying why."""
    raise ForbiddenTask(
        "embedq jobs run on embedq workers (`embedq worker`), which hold the model; not on a plain rq worker"
    )
