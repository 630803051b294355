"""The state store contract and its records.

Everything a bridge must remember across restarts lives here: the ledger of
final runs, dead letters, the inbox of events accepted over HTTP (or emitted,
replayed, fired by cron), parked retries, durable step results, joins, cron
positions, and the run history the developer UI shows. Every write method
returns only once the write is durable (committed), except where noted.

Where replicas compete (parked retries, joins, cron), the contract is what makes
them safe: claims take a lease, a join closes once, a cron tick advances once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

DeadLetterStatus = Literal["pending", "replayed", "discarded"]


@dataclass(slots=True)
class Attempt:
    """One attempt of a run: when it started, how long it took, how it failed."""

    number: int
    started_at: float
    duration: float
    error: str | None = None


@dataclass(slots=True)
class LedgerEntry:
    """A run that reached a final state. ``status`` is ``succeeded`` or ``dead_lettered``."""

    handler: str
    key: str
    event_id: str
    status: str = "succeeded"
    result: Any = None
    finished_at: float = field(default_factory=time.time)


@dataclass(slots=True)
class DeadLetter:
    """A message or run that could not be completed, with everything needed to replay it.

    ``handler`` is None when the message never became an event (bad input); then
    ``body`` holds the raw message (text, or ``base64:`` + base64) instead of ``event``.
    """

    reason: str
    connector: str
    handler: str | None = None
    event: dict[str, Any] | None = None
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    detail: Any = None
    attempts: list[Attempt] = field(default_factory=list)
    event_id: str | None = None
    event_type: str | None = None
    correlation_id: str | None = None
    trace_id: str | None = None
    status: DeadLetterStatus = "pending"
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeadLetter:
        raw = dict(raw)
        raw["attempts"] = [Attempt(**a) for a in raw.get("attempts") or []]
        return cls(**raw)


@dataclass(slots=True)
class InboxEntry:
    """An event accepted over HTTP (or emitted by a handler, or replayed), waiting to be processed.

    ``handler`` limits processing to one handler (a dead-letter replay).
    ``seq`` is assigned by the store and orders the inbox.
    """

    id: str
    body: bytes
    source: str = "api"
    handler: str | None = None
    created_at: float = field(default_factory=time.time)
    seq: int = 0


@dataclass(slots=True)
class ParkedRun:
    """A run waiting in the store for a retry whose delay is too long to wait inline.

    ``id`` is deterministic per run (event id + handler), so parking the same run
    again replaces it. ``attempt`` is the number of the attempt to run when due.
    """

    id: str
    handler: str
    event: dict[str, Any]
    connector: str
    attempt: int
    due_at: float
    attempts: list[Attempt] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)


JoinStatus = Literal["open", "completed", "timed_out"]


@dataclass(slots=True)
class Join:
    """An open wait for events, started by ``start``.

    ``expected`` is how many members complete it (None: any one). ``members`` maps
    a member event's id to what the join keeps of it.
    """

    id: str
    handler: str
    start: dict[str, Any]
    expected: int | None
    deadline: float
    status: JoinStatus = "open"
    members: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)


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


class Store(Protocol):
    """The state store. Implementations: memory (tests), SQLite (one replica), PostgreSQL."""

    url: str
    shared: bool
    """True when several bridge processes may share this store (PostgreSQL)."""

    async def open(self) -> None:
        """Connect and apply migrations."""

    async def close(self) -> None:
        """Flush pending writes and close. Idempotent."""

    async def ping(self) -> bool:
        """True when the store answers."""

    # ledger
    async def ledger_final(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Of the (handler, key) pairs, those with a final ledger entry, mapped to its status."""

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        """Record final runs; returns once committed. ``succeeded`` is never overwritten."""

    # dead letters
    async def dead_letter_add(self, letter: DeadLetter) -> None:
        """Store a dead letter; returns once committed."""

    async def dead_letters(
        self,
        *,
        status: DeadLetterStatus | None = None,
        handler: str | None = None,
        limit: int = 100,
        offset: int = 0,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> list[DeadLetter]:
        """Dead letters, newest first, filtered by any of the given fields."""

    async def dead_letter_get(self, letter_id: str) -> DeadLetter | None:
        """One dead letter by id."""

    async def dead_letter_set_status(self, letter_id: str, status: DeadLetterStatus) -> bool:
        """Change a dead letter's status; False when it does not exist."""

    # inbox
    async def inbox_put(self, entries: Sequence[InboxEntry]) -> list[bool]:
        """Add entries; for each, True if new, False if its id was already there. Durable on return."""

    async def inbox_pending(self, after_seq: int, limit: int) -> list[InboxEntry]:
        """Unfinished entries with ``seq`` above ``after_seq``, oldest first."""

    async def inbox_done(self, seqs: Iterable[int]) -> None:
        """Mark entries finished (their ids stay known for deduplication). Durable on return."""

    async def inbox_purge(self, older_than: float) -> int:
        """Forget finished entries finished before ``older_than`` (epoch); returns how many."""

    async def inbox_claim(self, now: float, limit: int, lease: float) -> list[InboxEntry]:
        """Claim up to ``limit`` unfinished entries that no live lease holds, oldest first,
        leasing them until ``now + lease``: replicas sharing a store never take the same
        entry while its lease holds."""

    async def inbox_lease(self, seqs: Iterable[int], until: float) -> None:
        """Extend (or, with ``until=0``, release) the leases of claimed entries."""

    # ledger (read)
    async def ledger_get(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], LedgerEntry]:
        """Of the (handler, key) pairs, the final ledger entries, with their results."""

    # parked retries
    async def parked_put(self, runs: Sequence[ParkedRun]) -> None:
        """Park runs (replacing any with the same id, lease released); durable on return."""

    async def parked_claim(self, now: float, limit: int, lease: float) -> list[ParkedRun]:
        """Claim up to ``limit`` runs due at ``now`` that no live lease holds, leasing them
        for ``lease`` seconds: two replicas never claim the same run while its lease holds."""

    async def parked_done(self, ids: Iterable[str]) -> None:
        """Forget parked runs that ran to a final state."""

    async def parked_list(self, limit: int = 100) -> list[ParkedRun]:
        """Parked runs, soonest due first."""

    async def parked_lease(self, ids: Iterable[str] | None, until: float) -> None:
        """Extend (or, with ``until=0``, release) leases of claimed runs; ``None``: every run.

        Extending skips runs whose lease was released meanwhile (parked again: due anew)."""

    # durable steps
    async def step_get(self, event_id: str, handler: str, step: str) -> tuple[bool, Any]:
        """(True, result) if the step was recorded, else (False, None)."""

    async def step_put(self, event_id: str, handler: str, step: str, result: Any) -> None:
        """Record a step's result; the first record wins. Durable on return."""

    # joins
    async def join_open(self, join: Join) -> bool:
        """Create the join; False if one with that id exists already."""

    async def join_get(self, join_id: str) -> Join | None:
        """One join with its members."""

    async def join_open_list(self, handler: str) -> list[Join]:
        """The handler's open joins (members not loaded)."""

    async def join_add(self, join_id: str, member_id: str, value: Any) -> Join | None:
        """Add a member (once per member id) and return the join with all its members;
        None if there is no such join."""

    async def join_close(self, join_id: str, status: JoinStatus, entry: InboxEntry | None) -> bool:
        """Close an open join and, in the same transaction, put ``entry`` (its outcome
        event) in the inbox. True only for the one caller that closed it."""

    async def join_due(self, now: float, limit: int) -> list[Join]:
        """Open joins whose deadline has passed, with their members."""

    async def join_buffer_add(
        self, handler: str, event_id: str, event: dict[str, Any], expires_at: float
    ) -> None:
        """Keep an event that matched no open join, for a join that opens later."""

    async def join_buffered(self, handler: str, now: float) -> list[dict[str, Any]]:
        """The handler's buffered events that have not expired, oldest first."""

    async def join_buffer_remove(self, handler: str, event_ids: Iterable[str]) -> None:
        """Forget buffered events that a join has collected."""

    async def join_purge(self, now: float, closed_before: float) -> int:
        """Drop expired buffered events and joins closed before ``closed_before``."""

    # cron
    async def cron_last(self, name: str) -> float | None:
        """The last tick (epoch seconds) fired for this schedule."""

    async def cron_advance(self, name: str, tick: float) -> bool:
        """Move the schedule to ``tick`` if it is later than the last one; True if moved."""

    # run history (best effort: callers batch these writes off the hot path)
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


def parked_from_dict(raw: dict[str, Any]) -> ParkedRun:
    """A ParkedRun from its stored JSON form (``asdict``)."""
    raw = dict(raw)
    raw["attempts"] = [Attempt(**a) for a in raw.get("attempts") or []]
    return ParkedRun(**raw)


def run_from_dict(raw: dict[str, Any]) -> RunRecord:
    """A RunRecord from its stored JSON form (``asdict``)."""
    raw = dict(raw)
    raw["attempts"] = [Attempt(**a) for a in raw.get("attempts") or []]
    return RunRecord(**raw)


def event_record_from_dict(raw: dict[str, Any]) -> EventRecord:
    """An EventRecord from its stored JSON form (``asdict``)."""
    return EventRecord(**raw)
