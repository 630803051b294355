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


class LedgerClaims(Protocol):
    """Run claims on a ledger that replicas share (``shared`` stores): the same (handler,
    key) never runs on two replicas at once.

    A claim is a ledger row with status ``running``, its owner and a deadline; it is not
    a final run (``ledger_final`` and ``ledger_get`` never return it). The run's end
    (``ledger_record``, ``dead_letter_final``) replaces it; a claim past its deadline
    (its replica died) may be taken by another.
    """

    async def ledger_claim(
        self,
        keys: Sequence[tuple[str, str]],
        read: Sequence[tuple[str, str]],
        event_id: str,
        owner: str,
        now: float,
        until: float,
    ) -> dict[tuple[str, str], str]:
        """Claim ``keys`` that have no entry (or an expired claim) until ``until``, in one
        statement; also read the final statuses of ``read`` (claimed never).

        Returns, for each of ``keys``: ``claimed`` (by ``owner`` now), ``running`` (held
        by another claim) or its final status; for ``read``, its final status if any.
        """

    async def ledger_release(self, keys: Sequence[tuple[str, str]], owner: str) -> None:
        """Drop ``owner``'s claims on ``keys`` (its run was parked or failed unrecorded)."""
