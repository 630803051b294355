"""State stores: ledger, dead letters, inbox, parked runs, steps, joins, cron, history.

The contract is one small protocol per concern (``bridge.store.contracts``),
combined into ``Store``; ``create_store(url)`` picks an implementation by URL
scheme: memory (tests), SQLite (one replica), PostgreSQL (replicas sharing state).
"""

from __future__ import annotations

from bridge.errors import StoreError
from bridge.store.contracts import (
    Attempt,
    DeadLetter,
    EventRecord,
    InboxEntry,
    Join,
    LedgerEntry,
    ParkedRun,
    RunRecord,
    Store,
)
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SqliteStore

__all__ = [
    "Attempt",
    "DeadLetter",
    "EventRecord",
    "InboxEntry",
    "Join",
    "LedgerEntry",
    "MemoryStore",
    "ParkedRun",
    "RunRecord",
    "SqliteStore",
    "Store",
    "create_store",
]


def create_store(url: str) -> Store:
    """A store for ``url`` (not yet opened).

    Raises:
        StoreError: the scheme is not supported.
    """
    if url.startswith("memory:"):
        return MemoryStore(url)
    if url.startswith("sqlite:"):
        return SqliteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        import importlib
        import importlib.util

        if importlib.util.find_spec("asyncpg") is None:  # imported only when the store opens
            raise StoreError(
                "the PostgreSQL store needs asyncpg, which is not installed: install the "
                "'postgres' extra (pip install 'fanout-bridge[postgres]')"
            )
        try:
            module = importlib.import_module("bridge.store.postgres")
        except ImportError as exc:
            raise StoreError(f"the PostgreSQL store is not available: {exc}") from exc
        store: Store = module.PostgresStore(url)
        return store
    scheme = url.partition(":")[0]
    raise StoreError(
        f"unsupported store URL scheme {scheme!r} (sqlite:///PATH, memory://, postgresql://...)"
    )
