"""Memory and SQLite stores pass the store contract; SQLite keeps state across reopen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.store import MemoryStore, SqliteStore, create_store
from bridge.store.contracts import InboxEntry, LedgerEntry
from bridge.store.sqlite import MIGRATIONS
from tests.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        store = MemoryStore()
        await store.open()
        yield store
        await store.close()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        store = SqliteStore(f"sqlite:///{tmp_path}/state.db")
        await store.open()
        yield store
        await store.close()


async def test_sqlite_state_survives_reopen_and_migrations_are_versioned(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    store = SqliteStore(url)
    await store.open()
    await store.ledger_record([LedgerEntry("h", "k", "e")])
    await store.inbox_put([InboxEntry("x", b"{}")])
    await store.close()
    again = SqliteStore(url)
    await again.open()
    assert await again.ledger_final([("h", "k")]) == {("h", "k"): "succeeded"}
    assert [e.id for e in await again.inbox_pending(0, 10)] == ["x"]
    await again.close()
    import sqlite3

    with sqlite3.connect(tmp_path / "state.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_url_schema_parameter() -> None:
    from bridge.store.postgres import split_url

    assert split_url("postgresql://u@h:5432/db?schema=bridge_a&sslmode=disable") == (
        "postgresql://u@h:5432/db?sslmode=disable",
        "bridge_a",
    )
    assert split_url("postgres://h/db")[1] == "public"


def test_store_urls() -> None:
    assert isinstance(create_store("memory://"), MemoryStore)
    assert create_store("sqlite:///.bridge/x.db").path == ".bridge/x.db"  # type: ignore[attr-defined]
    assert create_store("sqlite:////abs/x.db").path == "/abs/x.db"  # type: ignore[attr-defined]
    from bridge.errors import StoreError

    with pytest.raises(StoreError, match="unsupported store URL"):
        create_store("redis://x")
