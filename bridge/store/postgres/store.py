"""The PostgreSQL store: every concern on one connection pool."""

from __future__ import annotations

from bridge.store.postgres.batch import PostgresBatches
from bridge.store.postgres.cancellations import PostgresCancellations
from bridge.store.postgres.cron import PostgresCron
from bridge.store.postgres.dead_letters import PostgresDeadLetters
from bridge.store.postgres.flow import PostgresFlow
from bridge.store.postgres.history import PostgresHistory
from bridge.store.postgres.inbox import PostgresInbox
from bridge.store.postgres.joins import PostgresJoins
from bridge.store.postgres.ledger import PostgresLedger
from bridge.store.postgres.parked import PostgresParked
from bridge.store.postgres.steps import PostgresSteps


class PostgresStore(
    PostgresBatches,
    PostgresLedger,
    PostgresDeadLetters,
    PostgresInbox,
    PostgresParked,
    PostgresSteps,
    PostgresJoins,
    PostgresCron,
    PostgresHistory,
    PostgresCancellations,
    PostgresFlow,
):
    """The store contract on PostgreSQL.

    Args:
        url: ``postgresql://...``, with optional query parameters ``schema`` and the
            deadlines ``timeout`` and ``ping_timeout`` (``bridge.store.deadlines``).
        pool_size: most connections in the pool.
    """
