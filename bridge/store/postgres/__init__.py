"""The PostgreSQL store: for several replicas sharing one state.

asyncpg with a connection pool. Schema migrations are versioned in a
``bridge_schema`` table and applied under an advisory lock, so replicas starting
together migrate once. Each write commits before it returns. The tables live in
the schema named by the URL's ``schema`` query parameter (default ``public``),
so several bridges (or tests) can share one database.

``connection`` holds the pool, ``migrations`` the schema; each concern (ledger,
dead letters, inbox, parked runs, steps, joins, cron, history) has a module whose
class adds its statements to the connection, and ``store`` composes them into
``PostgresStore``.
"""

from __future__ import annotations

from bridge.store.postgres.connection import PostgresConnection, split_url
from bridge.store.postgres.migrations import MIGRATIONS
from bridge.store.postgres.store import PostgresStore

__all__ = ["MIGRATIONS", "PostgresConnection", "PostgresStore", "split_url"]
