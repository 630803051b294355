"""Run history for the developer UI: events and the runs of each (best effort, batched writes)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from bridge.store.contracts.attempts import Attempt


@dataclass(slots=True)
class EventRecord:
    """An event as the run history shows it.

    ``status``: running, succeeded, partial (some runs dead-lettered), dead_lettered
    (every run, or the event itself), or unrouted (no handler matched); once the
    event has runs in the history, it is computed from all of them (``event_status``).
    ``received_at`` and ``source`` say when and where the event first arrived: a
    replay or redelivery never changes them. ``runs`` is how many handlers' runs the
    history holds for it (counted by the store when it writes the event).
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
    runs: int = 0


@dataclass(slots=True)
class RunRecord:
    """One handler's run of one event in the history: status, every attempt, result.

    ``status``: running, succeeded, dead_lettered, skipped (already succeeded) or
    parked (waiting for a retry), or any other status a flow control gives it:
    cancelled (``cancel_on``), sleeping (``ctx.sleep``), waiting
    (``ctx.wait_for_event``), throttled or debouncing (waiting to start), debounced
    (superseded by a later event), batched (waiting in a batch buffer) ...; ``error``
    then says why in words (the last failure, or the reason a flow control gives: the
    one field for both), and ``due_at`` (epoch seconds) is when a run that is not
    running now is due to run again (a parked retry, the end of a sleep, a wait's
    timeout, a batch's timeout), else None. The UI shows whatever status, reason and due time a run carries.
    ``children`` are ids of events it emitted.
    """

    event_id: str
    handler: str
    status: str
    attempts: list[Attempt] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    children: list[str] = field(default_factory=list)
    updated_at: float = field(default_factory=time.time)
    due_at: float | None = None


# Run statuses that are final without a failure: the run will not start again.
DONE_STATUSES = frozenset({"succeeded", "skipped", "cancelled", "debounced"})


def event_status(statuses: Iterable[str]) -> str:
    """An event's overall status from the statuses of all its runs.

    running while any run is not final: running, parked, or any status other than
    the final ones (``DONE_STATUSES`` and dead_lettered), so a run a flow control
    holds (throttled, sleeping, waiting ...) keeps its event running; dead_lettered
    when every run is dead-lettered, partial when some are and the others are done;
    cancelled when every run was; succeeded when every run is done (succeeded,
    skipped, cancelled or debounced); unrouted with no runs.
    """
    seen = set(statuses)
    if not seen:
        return "unrouted"
    if seen - DONE_STATUSES - {"dead_lettered"}:
        return "running"
    if "dead_lettered" in seen:
        return "partial" if seen - {"dead_lettered"} else "dead_lettered"
    if seen == {"cancelled"}:
        return "cancelled"
    return "succeeded"


def merged_event(
    record: EventRecord, stored: EventRecord | None, run_statuses: Sequence[str]
) -> EventRecord:
    """What ``history_put`` writes for ``record``: the first write's arrival kept, and
    a final status computed from all the event's stored runs.

    Args:
        record: the event as the caller reports it now.
        stored: the event as already stored, if it is.
        run_statuses: the statuses of all its stored runs, this write's included.
    """
    merged = replace(record)
    if stored is not None:
        merged.received_at = stored.received_at
        merged.source = stored.source
    if merged.status != "running" and run_statuses:
        merged.status = event_status(run_statuses)
    merged.runs = len(run_statuses) or record.runs
    return merged


class History(Protocol):
    """The run history (best effort: callers batch these writes off the hot path)."""

    async def history_put(self, events: Sequence[EventRecord], runs: Sequence[RunRecord]) -> None:
        """Insert or update events (by id) and runs (by event id + handler), in one transaction.

        An event already stored keeps its ``received_at`` and ``source``; an event
        not reported ``running`` gets its status from all its stored runs (see
        ``merged_event``), so a replay of one branch never hides another one's
        dead letter.
        """

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

    async def history_children_of(self, parent_ids: Sequence[str]) -> list[EventRecord]:
        """Events whose parent is any of ``parent_ids``, in one round trip (a level of many
        trees at once: the UI's list rolls up each row's subtree this way)."""

    async def history_purge(self, older_than: float, keep: int) -> int:
        """Drop events received before ``older_than`` and all but the newest ``keep``
        (with their runs); returns how many events."""
