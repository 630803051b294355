"""Cancellations (``cancel_on``): a durable record per (handler, key) of when runs were cancelled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True, frozen=True)
class Cancellation:
    """Runs of ``handler`` for ``key`` created before ``at`` are cancelled (epoch seconds);
    the record is kept until ``expires_at``."""

    handler: str
    key: str
    at: float
    expires_at: float


class Cancellations(Protocol):
    """Cancellation records, read where a run is about to start."""

    async def cancel_record(self, records: Sequence[Cancellation]) -> None:
        """Record cancellations; for a (handler, key) recorded already, the later ``at`` and
        ``expires_at`` are kept. Durable on return."""

    async def cancel_find(self, handler: str, keys: Sequence[str], now: float) -> dict[str, float]:
        """Of ``keys``, those with a cancellation of ``handler`` not expired at ``now``,
        mapped to its ``at``."""

    async def cancel_purge(self, now: float) -> int:
        """Forget cancellations expired at ``now``; how many."""
