"""Joins: waits for events that close once, across replicas, and the buffer of early members."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bridge.store.contracts.inbox import InboxEntry

JoinStatus = Literal["open", "completed", "timed_out", "cancelled"]


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


class Joins(Protocol):
    """Joins and their members; closing one also puts its outcome event in the inbox."""

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
