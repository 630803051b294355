"""Parked runs: retries whose delay is too long to wait inline, and runs that sleep or wait
for an event (``ctx.sleep``, ``ctx.wait_for_event``), claimed under a lease when due."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.store.contracts.attempts import Attempt

_PARKED_NAMESPACE = uuid.UUID("0b6f3c1e-5d2a-4f7e-8a9b-3c4d5e6f7a8b")


def parked_run_id(event_id: str, handler_id: str) -> str:
    """One parked entry per run (event id + handler): parking a run again replaces it."""
    return str(uuid.uuid5(_PARKED_NAMESPACE, f"{event_id}\x1f{handler_id}"))


@dataclass(slots=True)
class ParkedRun:
    """A run waiting in the store for a retry whose delay is too long to wait inline.

    ``id`` is deterministic per run (event id + handler), so parking the same run
    again replaces it. ``attempt`` is the number of the attempt to run when due.
    ``created_at`` is when the run was first created (``cancel_on`` compares it).
    ``admission`` is where a run that the admission step queued (a throttle's start
    time, a debounce's due time) resumes it (``bridge.flow.controls``); None for a
    retry or a sleep. Runs due together are claimed highest ``priority`` first.
    """

    id: str
    handler: str
    event: dict[str, Any]
    connector: str
    attempt: int
    due_at: float
    attempts: list[Attempt] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    admission: dict[str, Any] | None = None
    priority: int = 0


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

    async def parked_of(self, handler: str) -> list[ParkedRun]:
        """Every parked run of ``handler`` (due or not, leased or not), soonest due first:
        ``cancel_on`` picks the runs a cancellation wakes among them."""

    async def parked_lease(self, ids: Iterable[str] | None, until: float) -> None:
        """Extend (or, with ``until=0``, release) leases of claimed runs; ``None``: every run.

        Extending skips runs whose lease was released meanwhile (parked again: due anew)."""

    async def parked_wake(self, ids: Iterable[str], now: float) -> list[str]:
        """Make parked runs due at ``now`` unless they are due sooner (a wait whose event
        came); returns the ids of those found. A leased run keeps its lease: when its
        holder parks it again, the caller of ``parked_wake`` must look again."""

    async def parked_renew(self, ids: Iterable[str], until: float, owner: str) -> list[str]:
        """Extend (or, with ``until=0``, release) the leases of the runs ``owner`` still
        holds; returns their ids. A run parked again since (lease released), forgotten, or
        claimed by another owner is left alone."""
