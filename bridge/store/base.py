"""The state store contract and its records.

Everything a bridge must remember across restarts lives here: the ledger of
succeeded runs, dead letters, and the inbox of events accepted over HTTP.
Every write method returns only once the write is durable (committed).
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


class Store(Protocol):
    """The state store. Implementations: memory (tests), SQLite (one replica), PostgreSQL."""

    url: str

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
    ) -> list[DeadLetter]:
        """Dead letters, newest first."""

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
