"""The SQLite store: every concern on one connection."""

from __future__ import annotations

from bridge.store.sqlite.batch import SqliteBatches
from bridge.store.sqlite.cancellations import SqliteCancellations
from bridge.store.sqlite.cron import SqliteCron
from bridge.store.sqlite.dead_letters import SqliteDeadLetters
from bridge.store.sqlite.flow import SqliteFlow
from bridge.store.sqlite.history import SqliteHistory
from bridge.store.sqlite.inbox import SqliteInbox
from bridge.store.sqlite.joins import SqliteJoins
from bridge.store.sqlite.ledger import SqliteLedger
from bridge.store.sqlite.parked import SqliteParked
from bridge.store.sqlite.steps import SqliteSteps


class SqliteStore(
    SqliteBatches,
    SqliteLedger,
    SqliteDeadLetters,
    SqliteInbox,
    SqliteParked,
    SqliteSteps,
    SqliteJoins,
    SqliteCron,
    SqliteHistory,
    SqliteCancellations,
    SqliteFlow,
):
    """The store contract on SQLite, with group commit.

    Args:
        url: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.
    """
