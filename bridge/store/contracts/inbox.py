"""The inbox: events accepted over HTTP, emitted, replayed or fired by cron, waiting to be processed."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class InboxEntry:
    """An event accepted over HTTP (or emitted by a handler, or replayed), waiting to be processed.

    ``source`` is where the entry came from (``api``, ``ui``, ``emit``, ``replay``,
    ``join``), not the event's CloudEvents ``source``: that is ``event_source``.
    An entry's identity is (``event_source``, ``id``), as CloudEvents defines an
    event's uniqueness: two producers may both send id ``1``.
    ``handler`` limits processing to one handler (a dead-letter replay).
    ``seq`` is assigned by the store and orders the inbox.
    """

    id: str
    body: bytes
    source: str = "api"
    handler: str | None = None
    created_at: float = field(default_factory=time.time)
    seq: int = 0
    event_source: str = ""

    @property
    def identity(self) -> tuple[str, str]:
        """What makes the entry unique: (the event's CloudEvents ``source``, its ``id``)."""
        return (self.event_source, self.id)


class InboxStore(Protocol):
    """The inbox's entries: put, read in order or claim under a lease, finish, purge."""

    async def inbox_put(self, entries: Sequence[InboxEntry]) -> list[bool]:
        """Add entries; for each, True if new, False if its identity (``event_source``, ``id``)
        was already there. Durable on return."""

    async def inbox_pending(self, after_seq: int, limit: int) -> list[InboxEntry]:
        """Unfinished entries with ``seq`` above ``after_seq``, oldest first."""

    async def inbox_done(self, seqs: Iterable[int]) -> None:
        """Mark entries finished (their ids stay known for deduplication). Durable on return."""

    async def inbox_purge(self, older_than: float) -> int:
        """Forget finished entries finished before ``older_than`` (epoch); returns how many."""

    async def inbox_claim(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[InboxEntry]:
        """Claim up to ``limit`` unfinished entries that no live lease holds, oldest first,
        leasing them to ``owner`` until ``now + lease``: replicas sharing a store never take
        the same entry while its lease holds."""

    async def inbox_lease(self, seqs: Iterable[int], until: float) -> None:
        """Extend (or, with ``until=0``, release) the leases of claimed entries, whoever holds them."""

    async def inbox_renew(self, seqs: Iterable[int], until: float, owner: str) -> list[int]:
        """Extend (or, with ``until=0``, release) the leases of the unfinished entries that
        ``owner`` still holds; returns their seqs. An entry another owner claimed since is
        left alone: ``owner`` lost it."""

    async def inbox_finish(self, seqs: Iterable[int], owner: str) -> list[int]:
        """``inbox_done`` for the entries ``owner`` still holds; returns their seqs.
        Durable on return."""
