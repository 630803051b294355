"""The run history: what the developer UI shows, written off the hot path.

The dispatcher reports events and runs as they change; the recorder keeps only
the latest state of each, in memory, and writes them in batches (one store
transaction per batch) every ``interval`` seconds, so a busy bridge pays a dict
update per change, not a store write. A write takes at most ``batch`` events (with
their runs, oldest first) and what is due beyond that goes in the next batches of
the same pass, so the memory a write needs (records serialised, rows encoded by the
store) is bounded by ``batch``, not by how much piled up behind a slow store. An event is written once it is final (or
parked), or once it has been running longer than ``hold`` seconds, so that a
busy bridge writes most events once, with their final status.

History is best effort and bounded: at most ``max_pending`` events (with their
runs) wait in memory. When a new event arrives with the buffer full, the oldest
pending event is dropped from the history (never from delivery) and counted in
``bridge_history_dropped_total``; a failed write is logged and dropped. Neither
ever holds up or slows a delivery. Retention (age and count) is applied as it goes.
After each batch is written, ``feed`` tells the UI's live pages which events changed.

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
from dataclasses import dataclass, field
from typing import Any

from bridge.events import Event
from bridge.history_feed import HistoryFeed
from bridge.metrics import Metrics
from bridge.store.contracts import EventRecord, RunRecord, Store, event_status

__all__ = ["DROPPED", "HistoryRecorder", "event_status"]

log = logging.getLogger("bridge.history")

DROPPED = "bridge_history_dropped_total"
PURGE_EVERY = 1.0  # seconds between retention passes: each pass stays small under load
BATCH = 256  # most events (with their runs) per store write


@dataclass(slots=True)
class _Pending:
    """What waits to be written for one event id."""

    id: str
    since: float
    event: Event[Any] | None = None  # serialised at write time, off the hot path
    record: EventRecord | None = None  # its record, without the event's body yet
    runs: dict[str, RunRecord] = field(default_factory=dict)
    refresh: bool = False  # recompute the stored event's status from its stored runs


class HistoryRecorder:
    """Batches history writes to the store, bounds what waits in memory, applies retention.

    Args:
        store: where the history lives.
        max_age: forget events older than this many seconds.
        max_events: keep at most this many events.
        interval: seconds between batched writes.
        max_pending: most events (with their runs) waiting in memory; beyond it
            the oldest is dropped from the history and counted in ``DROPPED``.
        hold: an event still running is written after this many seconds (so the
            UI shows it running); before that it waits to be written once, final.
        batch: most events (with their runs) per store write (one transaction).
        metrics: where ``DROPPED`` is counted.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_age: float,
        max_events: int,
        interval: float = 0.5,
        max_pending: int = 10_000,
        hold: float = 2.0,
        batch: int = BATCH,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.max_age = max_age
        self.max_events = max_events
        self.interval = interval
        self.max_pending = max(1, max_pending)
        self.hold = hold
        self.batch = max(1, batch)
        self.metrics = metrics or Metrics()
        self.metrics.inc(DROPPED, (), 0.0)  # shown from the start, at 0
        self.dropped = 0
        self._pending: dict[str, _Pending] = {}  # insertion order: oldest first
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()  # one flush writes at a time; a second waits for it
        self._last_purge = 0.0
        self.feed = HistoryFeed()

    @property
    def pending(self) -> int:
        """How many events wait in memory to be written (never above ``max_pending``)."""
        return len(self._pending)

    def _entry(self, event_id: str) -> _Pending:
        entry = self._pending.get(event_id)
        if entry is None:
            if len(self._pending) >= self.max_pending:
                # Full: the oldest waiting event leaves the history, so memory stays bounded.
                del self._pending[next(iter(self._pending))]
                self.dropped += 1
                self.metrics.inc(DROPPED)
            entry = self._pending[event_id] = _Pending(event_id, time.monotonic())
        return entry

    # ------------------------------------------------------------------ reports (sync, cheap)

    def event_started(self, event: Event[Any], source: str, trace_id: str | None) -> None:
        """An event is about to run through its handlers."""
        entry = self._entry(event.id)
        current = entry.record
        entry.event = event
        entry.record = EventRecord(
            id=event.id,
            type=event.type,
            source=source,
            received_at=current.received_at if current else time.time(),
            status="running",
            correlation_id=event.correlationid,
            parent_id=event.parentid,
            trace_id=trace_id,
        )

    def event_finished(self, event: Event[Any], statuses: Sequence[str]) -> None:
        """Every run of this delivery is final (or parked); ``statuses`` are the runs'
        (the store then counts the event's other runs too)."""
        entry = self._pending.get(event.id)
        record = entry.record if entry is not None else None
        if entry is None or record is None:  # already written: update it from the store
            self._entry(event.id).refresh = True
            return
        record.status = event_status(statuses)
        if record.status != "running":
            record.finished_at = time.time()

    def run(self, record: RunRecord) -> None:
        """A run changed: an attempt failed, or it became final or parked."""
        self._entry(record.event_id).runs[record.handler] = record

    def refresh(self, event_id: str) -> None:
        """Recompute an event's status from its stored runs (a parked run finished)."""
        self._entry(event_id).refresh = True

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="history")

    async def close(self) -> None:
        """Write what is pending and stop (after a write of the recorder's own pass that
        is under way: cancelling it would lose the records it had taken)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush(everything=True)
        self.feed.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            # Shielded: ``close`` cancels this loop, never a write under way; its own
            # flush waits for that write, then writes the rest.
            await asyncio.shield(self.flush())

    def _take(self, everything: bool) -> list[_Pending]:
        """Remove and return at most ``batch`` entries due now, oldest first: final, runs
        only, or held long enough (``everything``: any)."""
        due = time.monotonic() - self.hold
        taken: list[_Pending] = []
        for entry in self._pending.values():
            record = entry.record
            if everything or record is None or record.status != "running" or entry.since <= due:
                taken.append(entry)
                if len(taken) >= self.batch:
                    break
        for entry in taken:
            del self._pending[entry.id]
        return taken

    async def flush(self, everything: bool = False) -> None:
        """Write the pending records that are due (``everything``: all of them) now, in
        batches of at most ``batch`` events, one store transaction each.

        A flush made while another writes (the recorder's own pass) waits for it: once it
        returns, every record reported before the call is in the store (or its write
        failed), not only those this call took."""
        async with self._flushing:
            await self._flush(everything)

    async def _flush(self, everything: bool) -> None:
        while taken := self._take(everything):
            full = len(taken) >= self.batch
            await self._write(taken)
            del taken  # only one batch is ever held for writing
            if not full:
                break
        now = time.time()
        if now - self._last_purge > PURGE_EVERY:
            self._last_purge = now
            try:
                await self.store.history_purge(now - self.max_age, self.max_events)
            except Exception as exc:  # best effort: history never holds up delivery
                log.warning("could not purge the run history", extra={"error": str(exc)})

    async def _write(self, taken: list[_Pending]) -> None:
        """One batch: serialise the events' bodies now (off the hot path), write, notify."""
        events: list[EventRecord] = []
        runs: list[RunRecord] = []
        refresh: list[str] = []
        changed = [entry.id for entry in taken]
        parents = {e.record.parent_id for e in taken if e.record is not None and e.record.parent_id}
        for entry in taken:
            record = entry.record
            if record is not None:
                if entry.event is not None:
                    record.event = entry.event.to_dict()
                events.append(record)
            runs.extend(entry.runs.values())
            if entry.refresh:
                refresh.append(entry.id)
        try:
            if events or runs:
                await self.store.history_put(events, runs)
            if refresh:
                await self._recompute(refresh)
            self.feed.publish(changed, parents)
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
