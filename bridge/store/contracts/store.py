"""The composite store: every concern, plus opening, closing and health."""

from __future__ import annotations

from typing import Protocol

from bridge.store.contracts.cancellations import Cancellations
from bridge.store.contracts.cron import CronPositions
from bridge.store.contracts.dead_letters import DeadLetters
from bridge.store.contracts.flow import FlowState
from bridge.store.contracts.history import History
from bridge.store.contracts.inbox import InboxStore
from bridge.store.contracts.joins import Joins
from bridge.store.contracts.ledger import Ledger
from bridge.store.contracts.parked import ParkedRuns
from bridge.store.contracts.steps import Steps


class Store(
    Ledger,
    DeadLetters,
    InboxStore,
    ParkedRuns,
    Steps,
    Joins,
    CronPositions,
    History,
    Cancellations,
    FlowState,
    Protocol,
):
    """The state store. Implementations: memory (tests), SQLite (one replica), PostgreSQL.

    Each implementation applies its schema migrations on ``open``, so a store written
    by an older version opens as is.
    """

    url: str
    shared: bool
    """True when several bridge processes may share this store (PostgreSQL)."""
    legacy_keys: bool
    """True when the ledger may hold runs recorded under the default key of before (the
    event id alone): a lookup then reads those keys too. Known once ``open`` returned; a
    store created by this version or later has none."""

    async def open(self) -> None:
        """Connect and apply migrations."""

    async def close(self) -> None:
        """Flush pending writes and close. Idempotent."""

    async def ping(self) -> bool:
        """True when the store answers."""
