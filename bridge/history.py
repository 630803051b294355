"""The run history: what the developer UI shows, written off the hot path.

The dispatcher reports events and runs as they change; the recorder keeps only
the latest state of each in memory and writes them in batches every
``interval`` seconds, so a busy bridge pays a dict update per change, not a
store write. History is best effort: a failed write is logged and dropped, it
never holds up a delivery. Retention (age and count) is applied as it goes.

A delivery reports only the runs it made (a replay, one; a redelivery, those
not already final), so the status it reports is a first guess: the store sets
an event's final status from all its stored runs, and keeps when and where the
event first arrived (``History.history_put``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from bridge.events import Event
from bridge.store.contracts import EventRecord, RunRecord, Store, event_status

__all__ = ["HistoryRecorder", "event_status"]

log = logging.getLogger("bridge.history")


class HistoryRecorder:
    """Batches history writes to the store and applies retention.

    Args:
        store: where the history lives.
        max_age: forget events older than this many seconds.
        max_events: keep at most this many events.
        interval: seconds between batched writes.
    """

    def __init__(
        self, store: Store, *, max_age: float, max_events: int, interval: float = 0.5
    ) -> None:
        self.store = store
        self.max_age = max_age
        self.max_events = max_events
        self.interval = interval
        self._events: dict[str, EventRecord] = {}
        self._runs: dict[tuple[str, str], RunRecord] = {}
        self._refresh: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._last_purge = 0.0

    # ------------------------------------------------------------------ reports (sync, cheap)

    def event_started(self, event: Event[Any], source: str, trace_id: str | None) -> None:
        """An event is about to run through its handlers."""
        current = self._events.get(event.id)
        self._events[event.id] = EventRecord(
            id=event.id,
            type=event.type,
            source=source,
            received_at=current.received_at if current else time.time(),
            status="running",
            correlation_id=event.correlationid,
            parent_id=event.parentid,
            trace_id=trace_id,
            event=event.to_dict(),
        )

    def event_finished(self, event: Event[Any], statuses: Sequence[str]) -> None:
        """Every run of this delivery is final (or parked); ``statuses`` are the runs'
        (the store then counts the event's other runs too)."""
        record = self._events.get(event.id)
        if record is None:  # already written: update it from the store at flush time
            self._refresh.add(event.id)
            return
        record.status = event_status(statuses)
        if record.status != "running":
            record.finished_at = time.time()

    def run(self, record: RunRecord) -> None:
        """A run changed: an attempt failed, or it became final or parked."""
        self._runs[(record.event_id, record.handler)] = record

    def refresh(self, event_id: str) -> None:
        """Recompute an event's status from its stored runs (a parked run finished)."""
        self._refresh.add(event_id)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="history")

    async def close(self) -> None:
        """Write what is pending and stop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def flush(self) -> None:
        """Write pending records now."""
        events, self._events = list(self._events.values()), {}
        runs, self._runs = list(self._runs.values()), {}
        refresh, self._refresh = self._refresh, set()
        try:
            if events or runs:
                await self.store.history_put(events, runs)
            if refresh:
                await self._recompute(refresh)
            now = time.time()
            if now - self._last_purge > 60.0:
                self._last_purge = now
                await self.store.history_purge(now - self.max_age, self.max_events)
        except Exception as exc:  # best effort: history never holds up delivery
            log.warning("could not write the run history", extra={"error": str(exc)})

    async def _recompute(self, event_ids: Iterable[str]) -> None:
        changed = []
        for event_id in event_ids:
            record = await self.store.history_event(event_id)
            if record is None:
                continue
            runs = await self.store.history_runs(event_id)
            record.status = event_status(r.status for r in runs)
            if record.status != "running":
                record.finished_at = record.finished_at or time.time()
            changed.append(record)
        if changed:
            await self.store.history_put(changed, [])
