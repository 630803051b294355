"""The SQLite store: the embedded default for one replica.

One connection lives on one thread of its own. Operations queue up for it and
are executed in batches, one transaction per batch (group commit): under load,
hundreds of ledger writes share one commit. WAL journal with
``synchronous=NORMAL`` survives a killed process (not a power cut, which the
PostgreSQL store is for).

``connection`` holds the thread and the batching, ``migrations`` the schema; each
concern (ledger, dead letters, inbox, parked runs, steps, joins, cron, history)
has a module whose class adds its queries to the connection, and ``store``
composes them into ``SqliteStore``.
"""

from __future__ import annotations

from bridge.store.sqlite.connection import SqliteConnection, sqlite_path
from bridge.store.sqlite.migrations import MIGRATIONS
from bridge.store.sqlite.store import SqliteStore

__all__ = ["MIGRATIONS", "SqliteConnection", "SqliteStore", "sqlite_path"]
