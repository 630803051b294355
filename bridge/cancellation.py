"""``cancel_on``: an event that cancels a handler's runs for the same key.

A handler lists rules ``{event, match, timeout}``. ``match`` is CEL over ``event``,
evaluated on the handler's event and on the cancelling event (Inngest's
``match: "data.user_id"``, written ``event.data.user_id``): runs whose value equals
the cancelling event's are cancelled.

Its companion ``Canceller`` (subscribed to the rules' event types, id
``<handler>/cancel``) writes a durable cancellation record (handler, key, time) in
the store, then closes the open waits of the handler's runs for that key and makes
the runs it cancels that are parked (a retry, a sleep, a wait) due now, so they end
``cancelled`` within a scheduler poll rather than when next due. A run parked while
the cancellation is being recorded looks once more after parking
(``woken_if_cancelled``), so one of the two sees the other. Where a run is about to start (each attempt, after its concurrency
slot and flow control, so a run pending, throttled, parked, sleeping or waiting
included) the engine asks ``Canceller.cancelled``: a run created before a
cancellation for its key (and at most ``timeout`` before it) ends ``cancelled``
without starting. So a cancelled run never starts after its cancellation was
recorded. An attempt already running when the cancellation comes is not
interrupted; the run ends cancelled at its next start (a retry, a resume).

``cancelled`` is a final status of its own: in the ledger (a redelivered message
does not run it again), the run history, ``bridge_runs_total{outcome="cancelled"}``;
never a dead letter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

import bridge.jsonio as jsonio
from bridge.duration import Duration
from bridge.events import Event
from bridge.routing import compile_filter
from bridge.store.contracts import Cancellation, parked_run_id
from bridge.waits import collector_id

if TYPE_CHECKING:
    from bridge.store.contracts import Store

KEEP = 7 * 86_400.0
"""The least time a cancellation record is kept (runs parked before it may start late)."""


class CancelOn(BaseModel):
    """An event that cancels this handler's runs for the same key."""

    model_config = ConfigDict(extra="forbid")

    event: str = Field(
        description="The event type (exact) that cancels.", examples=["order/cancelled"]
    )
    match: str = Field(
        description="CEL over `event`, evaluated on the run's event and on the cancelling "
        "one: runs whose value equals the cancelling event's are cancelled.",
        examples=["event.data.order_id"],
    )
    timeout: Duration = Field(
        KEEP,
        description="Only runs created at most this long before the cancelling event are "
        "cancelled. Its record is kept this long (at least 7 days).",
    )

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str) -> str:
        compile_filter(value)  # a ValueError names the mistake
        return value


class RunCancelled(Exception):
    """The run was cancelled (``cancel_on``) before it started; the reason says by what."""


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


class Canceller:
    """One handler's ``cancel_on``: records cancellations, and says whether a run is cancelled.

    Args:
        handler: the handler's id.
        rules: its ``cancel_on``.
        store: where cancellations, waits and parked runs live.
        wall: wall-clock time (epoch seconds).
    """

    def __init__(
        self,
        handler: str,
        rules: Sequence[CancelOn],
        store: Store,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.handler = handler
        self.id = f"{handler}/cancel"
        self.on = tuple(dict.fromkeys(r.event for r in rules))
        self.rules = [(r, compile_filter(r.match)) for r in rules]
        self.store = store
        self.wall = wall

    def _keys(self, doc: dict[str, Any], event_type: str | None = None) -> dict[str, CancelOn]:
        """Record key -> rule, of the rules (those of ``event_type``, if given) that give
        ``doc`` a value."""
        keys = {}
        for rule, program in self.rules:
            if event_type is not None and rule.event != event_type:
                continue
            try:
                value = program.execute({"event": doc})
            except Exception:  # the event lacks the field: no key, nothing to cancel
                continue
            if value is None:
                continue
            keys[f"{rule.event}\x1f{jsonio.dumps(value, default=str).decode()}"] = rule
        return keys

    async def cancelled(self, event: Event[Any], created: float) -> str | None:
        """Why the run of ``event`` created at ``created`` is cancelled, or None if it is not."""
        keys = self._keys(event.to_dict())
        if not keys:
            return None
        found = await self.store.cancel_find(self.handler, list(keys), self.wall())
        for key, at in found.items():
            rule = keys[key]
            if at - rule.timeout <= created <= at:
                return f"cancelled by {rule.event} at {_iso(at)}"
        return None

    async def invoke(self, event: Event[Any], ctx: Any) -> Any:
        """Record the cancellations ``event`` makes, then wake the runs they cancel that are
        parked (a retry), sleeping or waiting, so they end ``cancelled`` now rather than
        when next due."""
        now = self.wall()
        keys = self._keys(event.to_dict(), event.type)
        if not keys:
            return {"cancelled": []}
        records = [
            Cancellation(self.handler, key, now, now + max(rule.timeout, KEEP))
            for key, rule in keys.items()
        ]
        await self.store.cancel_record(records)
        closed = await self._close_waits(set(keys))
        woke = await self._wake_parked(keys, now, closed)
        return {"cancelled": sorted(keys), "woke": woke}

    async def _wake_parked(
        self, keys: dict[str, CancelOn], now: float, closed: list[str]
    ) -> list[str]:
        """Make the parked runs these cancellations cancel due now (and those whose wait
        was ``closed``); the events of the runs woken.

        Called after the cancellation was recorded, so a run being parked meanwhile is
        seen either here or by its own look after parking (``woken_if_cancelled``)."""
        store = self.store
        wake = {parked_run_id(event_id, self.handler): event_id for event_id in closed}
        for run in await store.parked_of(self.handler):
            if run.due_at <= now:
                continue
            for key in keys.keys() & self._keys(run.event).keys():
                if now - keys[key].timeout <= run.created_at <= now:
                    wake[run.id] = str(run.event.get("id"))
        found = await store.parked_wake(list(wake), now) if wake else []
        return sorted(wake[i] for i in found)

    async def woken_if_cancelled(self, event: Event[Any], created: float) -> bool:
        """After a run of ``event`` was parked: if a cancellation came meanwhile (its wake
        may have missed the run), make it due now, so it ends cancelled promptly."""
        if await self.cancelled(event, created) is None:
            return False
        await self.store.parked_wake([parked_run_id(event.id, self.handler)], self.wall())
        return True

    async def _close_waits(self, keys: set[str]) -> list[str]:
        """Close the open waits of runs for ``keys``: their outcome is ``cancelled``. The
        events of the runs whose waits were closed."""
        store = self.store
        closed = []
        for join in await store.join_open_list(collector_id(self.handler)):
            run_event = join.start.get("event") or {}
            if not keys & set(self._keys(run_event)):
                continue
            if await store.join_close(join.id, "cancelled", None):
                closed.append(join.start["run_event"])
        return closed
