"""``Context``: what a handler gets besides the event."""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

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
    """

    __slots__ = ("_log", "_seq", "_steps", "attempt", "emitted", "event", "handler_id", "store")

    def __init__(
        self, event: Event[Any], handler_id: str, attempt: int, store: Store | None = None
    ) -> None:
        self.event = event
        self.handler_id = handler_id
        self.attempt = attempt
        self.store = store
        self.emitted: list[Event[Any]] = []
        self._seq = 0
        self._steps: set[str] | None = None
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    async def step(self, step_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` once per (event, handler, step id), durably.

        The result (JSON-able) is kept in the store; a retried attempt or a
        redelivered event gets the kept result instead of running the step again.
        A failing step keeps nothing, so the retry runs it again. Using one step
        id twice in an attempt is a mistake in the handler: the run dead-letters.
        """
        if self._steps is None:
            self._steps = set()
        if step_id in self._steps:
            raise StepError(f"step id {step_id!r} is used twice in one run of {self.handler_id}")
        self._steps.add(step_id)
        store = self.store
        if store is None:
            raise StepError("ctx.step needs the bridge's store (it runs only inside the bridge)")
        found, result = await store.step_get(self.event.id, self.handler_id, step_id)
        if found:
            return result
        value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        # The first run returns what a replay will: the JSON form of the result.
        kept = orjson.loads(orjson.dumps(jsonable(value), default=str))
        await store.step_put(self.event.id, self.handler_id, step_id, kept)
        return kept

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
