"""Dead letters: messages and runs that could not be completed, kept to be listed and replayed."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from bridge.store.contracts.attempts import Attempt
from bridge.store.contracts.ledger import LedgerEntry

DeadLetterStatus = Literal["pending", "replayed", "discarded"]


@dataclass(slots=True)
class DeadLetter:
    """A message or run that could not be completed, with everything needed to replay it.

    ``handler`` is None when the message never became an event (bad input); then
    ``body`` holds the raw message (text, or ``base64:`` + base64) instead of ``event``.
    ``key`` is the run's ledger (idempotency) key, which a replay checks first
    (None on letters filed before it was kept, and on those of no handler).
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
    key: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeadLetter:
        raw = dict(raw)
        raw["attempts"] = [Attempt(**a) for a in raw.get("attempts") or []]
        return cls(**raw)


class DeadLetters(Protocol):
    """Dead letters: add, list, read, change status."""

    async def dead_letter_add(self, letter: DeadLetter) -> None:
        """Store a dead letter; returns once committed."""

    async def dead_letter_final(self, letter: DeadLetter, entry: LedgerEntry | None) -> None:
        """Store a run's dead letter and its ledger entry (if any) in one transaction:
        both or neither, so a fault between them can neither lose the run's end nor,
        on the run's retry, file a second letter. Returns once committed."""

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
