"""The ledger: final runs by (handler, idempotency key), so a redelivery re-runs only what had not succeeded."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class LedgerEntry:
    """A run that reached a final state. ``status`` is ``succeeded`` or ``dead_lettered``."""

    handler: str
    key: str
    event_id: str
    status: str = "succeeded"
    result: Any = None
    finished_at: float = field(default_factory=time.time)


class Ledger(Protocol):
    """Final runs, keyed by (handler, idempotency key)."""

    async def ledger_final(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Of the (handler, key) pairs, those with a final ledger entry, mapped to its status."""

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        """Record final runs; returns once committed. ``succeeded`` is never overwritten."""

    async def ledger_get(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], LedgerEntry]:
        """Of the (handler, key) pairs, the final ledger entries, with their results."""
