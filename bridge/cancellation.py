"""``cancel_on``: an event that cancels a handler's runs for the same key.

A handler lists rules ``{event, match, timeout}``. ``match`` is CEL over ``event``,
evaluated on the handler's event and on the cancelling event (Inngest's
``match: "data.user_id"``, written ``event.data.user_id``): runs whose value equals
the cancelling event's are cancelled.

Its companion ``Canceller`` (subscribed to the rules' event types, id
``<handler>/cancel``) writes a durable cancellation record (handler, key, time) in
the store, then closes the open waits of the handler's runs for that key and wakes
those runs. Where a run is about to start (each attempt, after its concurrency
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

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

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
            keys[f"{rule.event}\x1f{orjson.dumps(value, default=str).decode()}"] = rule
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
        """Record the cancellations ``event`` makes; wake the runs waiting for an event."""
        now = self.wall()
        keys = self._keys(event.to_dict(), event.type)
        if not keys:
            return {"cancelled": []}
        records = [
            Cancellation(self.handler, key, now, now + max(rule.timeout, KEEP))
            for key, rule in keys.items()
        ]
        await self.store.cancel_record(records)
        woke = await self._close_waits(set(keys))
        return {"cancelled": sorted(keys), "woke": woke}

    async def _close_waits(self, keys: set[str]) -> list[str]:
        """Close the open waits of runs for ``keys`` and wake those runs: they end cancelled
        now rather than at their wait's timeout."""
        store = self.store
        woke = []
        for join in await store.join_open_list(collector_id(self.handler)):
            run_event = join.start.get("event") or {}
            if not keys & set(self._keys(run_event)):
                continue
            if await store.join_close(join.id, "cancelled", None):
                await store.parked_wake(
                    [parked_run_id(join.start["run_event"], self.handler)], self.wall()
                )
                woke.append(join.start["run_event"])
        return woke
