"""Parked runs: retries whose delay is too long to wait inline, claimed under a lease when due."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.store.contracts.attempts import Attempt


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


class ParkedRuns(Protocol):
    """Parked runs: park, claim when due, renew or release leases, forget."""

    async def parked_put(self, runs: Sequence[ParkedRun]) -> None:
        """Park runs (replacing any with the same id, lease released); durable on return."""

    async def parked_claim(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[ParkedRun]:
        """Claim up to ``limit`` runs due at ``now`` that no live lease holds, leasing them to
        ``owner`` for ``lease`` seconds: two replicas never claim the same run while its
        lease holds."""

    async def parked_done(self, ids: Iterable[str]) -> None:
        """Forget parked runs that ran to a final state."""

    async def parked_list(self, limit: int = 100) -> list[ParkedRun]:
        """Parked runs, soonest due first."""

    async def parked_lease(self, ids: Iterable[str] | None, until: float) -> None:
        """Extend (or, with ``until=0``, release) leases of claimed runs; ``None``: every run.

        Extending skips runs whose lease was released meanwhile (parked again: due anew)."""

    async def parked_renew(self, ids: Iterable[str], until: float, owner: str) -> list[str]:
        """Extend (or, with ``until=0``, release) the leases of the runs ``owner`` still
        holds; returns their ids. A run parked again since (lease released), forgotten, or
        claimed by another owner is left alone."""
