"""``Context``: what a handler gets besides the event."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bridge import jsonio, waits
from bridge.duration import parse_duration
from bridge.errors import Fatal
from bridge.events import Event, jsonable, now_iso
from bridge.tracing import current_traceparent

if TYPE_CHECKING:
    from bridge.store.contracts import Store

_CHILD_NAMESPACE = uuid.UUID("6f1d4a52-27a4-4d8c-9a51-9a0a3c1e7b10")
_logger = logging.getLogger("bridge.handler")


def child_event_id(parent_id: str, handler_id: str, seq: int) -> str:
    """Deterministic id of the ``seq``-th event emitted by a handler for a parent event.

    A retried or redelivered parent emits children with the same ids, so the
    inbox keeps only one of each.
    """
    return str(uuid.uuid5(_CHILD_NAMESPACE, f"{parent_id}\x1f{handler_id}\x1f{seq}"))


class StepError(Fatal):
    """A durable step was misused (an id used twice in one attempt)."""


class Context:
    """Per-attempt context of a run.

    Attributes:
        event: the event being handled.
        handler_id: the handler's id.
        attempt: 1 for the first attempt, 2 for the first retry, ...
        log: a logger whose lines carry the correlation id, event and handler.
        wall: wall-clock time (epoch seconds) for sleeps and waits.
        waits: event type -> buffer seconds, the types ``wait_for_event`` may wait for
            (the handler kind sets it from its ``waits``).
    """

    __slots__ = (
        "_log",
        "_seq",
        "_steps",
        "attempt",
        "emitted",
        "event",
        "handler_id",
        "store",
        "waits",
        "wall",
    )

    def __init__(
        self,
        event: Event[Any],
        handler_id: str,
        attempt: int,
        store: Store | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.event = event
        self.handler_id = handler_id
        self.attempt = attempt
        self.store = store
        self.wall = wall
        self.waits: Mapping[str, float] | None = None
        self.emitted: list[Event[Any]] = []
        self._seq = 0
        self._steps: set[str] | None = None
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    def claim_step(self, step_id: str) -> Store:
        """Mark ``step_id`` used in this attempt; the store that keeps steps.

        Raises:
            StepError: the id was used already in this attempt, or there is no store.
        """
        if self._steps is None:
            self._steps = set()
        if step_id in self._steps:
            raise StepError(f"step id {step_id!r} is used twice in one run of {self.handler_id}")
        self._steps.add(step_id)
        if self.store is None:
            raise StepError("durable steps need the bridge's store (they run only inside it)")
        return self.store

    async def step(self, step_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once per (event, handler, step id), durably.

        The result (JSON-able) is kept in the store; a retried attempt or a
        redelivered event gets the kept result instead of running the step again.
        A failing step keeps nothing, so the retry runs it again. Using one step
        id twice in an attempt is a mistake in the handler: the run dead-letters.
        """
        store = self.claim_step(step_id)
        found, result = await store.step_get(self.event.id, self.handler_id, step_id)
        if found:
            return result
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        # The first run returns what a replay will: the JSON form of the result.
        kept = jsonio.loads(jsonio.dumps(jsonable(value), default=str))
        await store.step_put(self.event.id, self.handler_id, step_id, kept)
        return kept

    def sleep(self, step_id: str, duration: str | float) -> Coroutine[Any, Any, None]:
        """Sleep durably for ``duration`` (``"2h"``, or seconds), as the step ``step_id``:
        ``await ctx.sleep("nap", "2h")``.

        The first call parks the run (``bridge.waits``): the attempt ends without
        counting as a failure, and the handler runs again from the start once the time
        is up, in whichever replica claims it; finished steps are replayed, and this
        call then returns at once. Code outside ``ctx.step`` before it runs again.

        Raises:
            Fatal: called from a sync function (in a thread, where it cannot be awaited):
                the run is dead-lettered with a reason that says so.
        """
        self._awaitable_here("sleep")
        seconds = parse_duration(duration)
        return waits.sleep_until(self, step_id, self.wall() + seconds)

    def sleep_until(self, step_id: str, until: float | datetime | str) -> Coroutine[Any, Any, None]:
        """Sleep durably until ``until`` (epoch seconds, an aware ``datetime`` or an ISO
        8601 string), as the step ``step_id``; see ``sleep``."""
        self._awaitable_here("sleep_until")
        if isinstance(until, str):
            until = datetime.fromisoformat(until.replace("Z", "+00:00"))
        if isinstance(until, datetime):
            until = until.timestamp()
        return waits.sleep_until(self, step_id, float(until))

    def wait_for_event(
        self,
        step_id: str,
        type: str,
        *,
        match: str | None = None,
        timeout: str | float,
    ) -> Coroutine[Any, Any, Event[Any] | None]:
        """Wait durably for an event of ``type`` that ``match`` accepts, as the step ``step_id``.

        ``match`` is CEL over ``event`` (this run's event) and ``async`` (the awaited
        one), e.g. ``"async.data.order_id == event.data.order_id"``; ``type`` must be
        declared under the handler's ``waits``. Returns the event, or None once
        ``timeout`` passed. The run is parked meanwhile, as for ``sleep``; an event that
        came shortly before the wait opened (within its ``buffer``) is not missed.
        Raises ``Fatal`` from a sync function, as ``sleep``.
        """
        self._awaitable_here("wait_for_event")
        seconds = parse_duration(timeout)
        return waits.wait_for_event(self, step_id, type, match, seconds)

    def _awaitable_here(self, call: str) -> None:
        """A sync function runs in a thread with no event loop: what it gets from a durable
        sleep or wait can never be awaited there, and would silently do nothing."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise Fatal(
                f"ctx.{call} needs an async handler function: {self.handler_id}'s function is "
                "sync (it runs in a thread, where a durable sleep or wait cannot be awaited); "
                "make it `async def` and `await` the call"
            ) from None

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._log is None:
            self._log = logging.LoggerAdapter(_logger, self.log_fields())
        return self._log

    def log_fields(self) -> dict[str, Any]:
        """The structured fields every log line of this run carries."""
        return {
            "correlation_id": self.event.correlationid,
            "event_id": self.event.id,
            "event_type": self.event.type,
            "handler": self.handler_id,
            "attempt": self.attempt,
        }

    def emit(
        self,
        type: str,
        data: Any,
        *,
        subject: str | None = None,
        source: str | None = None,
        extensions: Mapping[str, Any] | None = None,
        datacontenttype: str | None = None,
    ) -> Event[Any]:
        """Emit a child event; it is sent only if this attempt succeeds.

        The child keeps the correlation id and trace of this event (``traceparent``,
        ``tracestate``, ``baggage``), names it as its parent, and has a deterministic
        id, so a retried attempt does not create it twice. ``data`` may be bytes
        (``datacontenttype`` then defaults to ``application/octet-stream``) or text
        with a text ``datacontenttype``.
        """
        if datacontenttype is None:
            binary = isinstance(data, bytes | bytearray)
            datacontenttype = "application/octet-stream" if binary else "application/json"
        inherited = {"baggage": self.event.extensions.get("baggage")}
        extensions = {**{k: v for k, v in inherited.items() if v}, **(extensions or {})}
        self._seq += 1
        child: Event[Any] = Event(
            id=child_event_id(self.event.id, self.handler_id, self._seq),
            source=source or f"bridge://handler/{self.handler_id}",
            type=type,
            data=bytes(data) if isinstance(data, bytearray) else jsonable(data),
            time=now_iso(),
            subject=subject,
            datacontenttype=datacontenttype,
            correlationid=self.event.correlationid or self.event.id,
            traceparent=current_traceparent() or self.event.traceparent,
            tracestate=self.event.tracestate,
            parentid=self.event.id,
            extensions=extensions,
        )
        self.emitted.append(child)
        return child
