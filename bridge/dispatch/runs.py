"""What a run is: a handler bound for dispatch, how its run ended, where a parked one resumes.

Also the identities the engine derives from an event: a parked run's id and the
trace id its dead letters and history carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

import bridge.jsonio as jsonio
from bridge.cancellation import Canceller
from bridge.events import Event, jsonable
from bridge.flow import HandlerFlow
from bridge.flow.priority import PriorityLimiter
from bridge.handling import DEFAULT_IDEMPOTENCY_KEY, DeadLetterTarget, Handler
from bridge.limits import BatchConfig
from bridge.retry import RetryPolicy
from bridge.store.contracts import Attempt
from bridge.store.contracts.parked import parked_run_id as parked_run_id  # re-exported
from bridge.templates import Template, TemplateError, event_scope
from bridge.tracing import current_ids

Emitter = Callable[[Sequence[Event[Any]]], Awaitable[None]]
RunStatus = Literal["succeeded", "dead_lettered", "skipped", "parked", "debounced", "cancelled"]


@dataclass(slots=True, frozen=True)
class Resume:
    """Where a parked run picks up: its next attempt number, the attempts so far, when
    the run was created (wall clock; None for a run parked before this was kept), and,
    for a run the admission step queued, where its admission resumes."""

    attempt: int
    attempts: tuple[Attempt, ...] = ()
    created: float | None = None
    admission: dict[str, Any] | None = None


@dataclass(slots=True, eq=False)
class BoundHandler:
    """A handler with everything the dispatcher needs to run it."""

    id: str
    handler: Handler
    retry: RetryPolicy
    timeout: float
    idempotency_key: Template
    limiter: asyncio.Semaphore | PriorityLimiter | None = None
    flow: HandlerFlow | None = None
    dead_letter: DeadLetterTarget | None = None
    cancel: Canceller | None = None
    batch: BatchConfig | None = None
    labels: tuple[tuple[str, str], ...] = ()
    succeeded_labels: tuple[tuple[str, str], ...] = ()
    dead_lettered_labels: tuple[tuple[str, str], ...] = ()
    # Whether the handler reads its attempt's deadline before its first await (see
    # ``Handler``): its timeout is then armed before the call, not at its first suspension.
    reads_deadline: bool = False
    # Whether the handler keeps the default idempotency key (the event's source and id).
    default_key: bool = False
    _longest: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # Metric label tuples, built once rather than per run.
        self.labels = (("handler", self.id),)
        self.succeeded_labels = (*self.labels, ("outcome", "succeeded"))
        self.dead_lettered_labels = (*self.labels, ("outcome", "dead_lettered"))
        self.reads_deadline = bool(getattr(self.handler, "reads_deadline", False))
        self.default_key = self.idempotency_key.source == DEFAULT_IDEMPOTENCY_KEY

    @property
    def longest_run(self) -> float:
        """How long a ledger claim on a run of this handler lasts: its attempts, their
        timeouts and the backoffs between them, plus a minute (and a batch's wait for
        its timeout). Computed when first read (the fan-out reads it for each claimed
        run), once the handler is set up."""
        longest = self._longest
        if longest is None:
            retry = self.retry
            waits = self.batch.timeout if self.batch is not None else 0.0
            longest = self._longest = (
                retry.attempts * self.timeout
                + (retry.attempts - 1) * retry.max_delay
                + 60.0
                + waits
            )
        return longest

    def key(self, event: Event[Any]) -> str:
        """The ledger key of this handler's run for ``event``."""
        if self.default_key:
            return f"{event.source}\x1f{event.id}"
        source = self.idempotency_key.source
        if source == "{id}":
            return event.id
        try:
            return self.idempotency_key.render_str(event_scope(event))
        except TemplateError:
            return event.id

    def legacy_key(self, event: Event[Any]) -> str | None:
        """The key the default template gave before events were identified by source and
        id (the id alone), so that runs recorded before an upgrade still count; None for
        a handler with a template of its own."""
        if self.default_key:
            return event.id
        return None


def ledger_keys(event: Event[Any], bound: Sequence[BoundHandler]) -> list[tuple[str, str]]:
    """The ledger key of each handler's run for ``event`` (``BoundHandler.key``), the
    default one rendered once for all the handlers that keep it."""
    default = None
    keys = []
    for b in bound:
        if b.default_key:
            if default is None:
                default = b.key(event)
            keys.append((b.id, default))
        else:
            keys.append((b.id, b.key(event)))
    return keys


Failures = dict[int, BaseException]
"""The runs of a batch whose entries were not written: ``id(run)`` -> the store's error."""


class Written(asyncio.Future[Failures | None]):
    """A batch's write: done once it is durable, with the runs it could not record (None:
    none); ``StoreError`` for every run if it could not be made (the bridge stops).

    Shared by the deliveries of the batch, so it cannot be cancelled: a delivery
    cancelled while it awaits this is cancelled when the write is done (within the
    store's call deadline), and the others still get their answer. Cheaper than
    ``asyncio.shield`` per delivery: no second future, no second loop callback.
    """

    def cancel(self, msg: Any = None) -> bool:
        return False


@dataclass(slots=True)
class Run:
    """How one handler's run for one event ended."""

    handler: str
    status: RunStatus
    result: Any = None
    error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    written: Written | None = field(default=None, repr=False, compare=False)
    """The write of the run's ledger entry, when it was written behind the run
    (``bridge.dispatch.recorder``): the run's message is settled only once it is done."""


@dataclass(slots=True, eq=False)
class RunState:
    """One run in progress: its handler, event and ledger key, and its attempts so far.

    ``started`` is when the run started and ``began`` when its current attempt
    ``number`` started, both on the engine's clock; ``created`` is when the run was
    created, on the wall clock (kept across parking: ``cancel_on`` compares it).
    The key may be given as None: it is then rendered when first read (a run that
    ends well without the ledger never reads it).
    """

    event: Event[Any]
    bh: BoundHandler
    given_key: str | None
    connector: str
    resume: Resume | None
    started: float
    attempts: list[Attempt]
    number: int = 0
    began: float = 0.0
    created: float = 0.0

    @property
    def key(self) -> str:
        """The run's ledger key (``BoundHandler.key``)."""
        key = self.given_key
        if key is None:
            key = self.given_key = self.bh.key(self.event)
        return key


def trace_id(traceparent: str | None) -> str | None:
    """The trace id of the current span, else the one in the event's traceparent."""
    live, _ = current_ids()
    if live is not None:
        return live
    if traceparent and len(traceparent) >= 35:
        return traceparent[3:35]
    return None


def jsonable_result(value: Any) -> Any:
    """A handler's result as plain JSON values (for the history and completion events)."""
    try:
        return jsonio.loads(jsonio.dumps(jsonable(value), default=str))
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)
