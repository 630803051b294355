"""Run history for the developer UI: events and the runs of each (best effort, batched writes)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.store.contracts.attempts import Attempt


@dataclass(slots=True)
class EventRecord:
    """An event as the run history shows it.

    ``status``: running, succeeded, partial (some runs dead-lettered), dead_lettered
    (every run, or the event itself), or unrouted (no handler matched).
    """

    id: str
    type: str
    source: str
    received_at: float
    status: str = "running"
    correlation_id: str | None = None
    parent_id: str | None = None
    trace_id: str | None = None
    event: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None


@dataclass(slots=True)
class RunRecord:
    """One handler's run of one event in the history: status, every attempt, result.

    ``status``: running, succeeded, dead_lettered, skipped (already succeeded) or
    parked (waiting for a retry). ``children`` are ids of events it emitted.
    """

    event_id: str
    handler: str
    status: str
    attempts: list[Attempt] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    children: list[str] = field(default_factory=list)
    updated_at: float = field(default_factory=time.time)


class History(Protocol):
    """The run history (best effort: callers batch these writes off the hot path)."""

    async def history_put(self, events: Sequence[EventRecord], runs: Sequence[RunRecord]) -> None:
        """Insert or update events (by id) and runs (by event id + handler)."""

    async def history_events(
        self,
        *,
        type: str | None = None,
        status: str | None = None,
        search: str | None = None,
        before: float | None = None,
        limit: int = 50,
    ) -> list[EventRecord]:
        """Events newest first; ``search`` matches an event id or correlation id exactly;
        ``before`` pages: only events received before that time."""

    async def history_event(self, event_id: str) -> EventRecord | None:
        """One event of the history."""

    async def history_runs(self, event_id: str) -> list[RunRecord]:
        """The runs of one event, by handler."""

    async def history_children(self, event_id: str) -> list[EventRecord]:
        """Events whose parent is this event."""

    async def history_purge(self, older_than: float, keep: int) -> int:
        """Drop events received before ``older_than`` and all but the newest ``keep``
        (with their runs); returns how many events."""
