"""State stores: ledger, dead letters, inbox. ``open_store(url)`` picks one by URL scheme."""

from __future__ import annotations

from bridge.errors import StoreError
from bridge.store.base import Attempt, DeadLetter, InboxEntry, LedgerEntry, Store
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SqliteStore

__all__ = [
    "Attempt",
    "DeadLetter",
    "InboxEntry",
    "LedgerEntry",
    "MemoryStore",
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
