"""Memory and SQLite stores pass the store contract; SQLite keeps state across reopen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.store import MemoryStore, SqliteStore, create_store
from bridge.store.contracts import InboxEntry, LedgerEntry
from bridge.store.sqlite import MIGRATIONS
from tests.flow_contract import FlowStateContract
from tests.store_contract import StoreContract


class TestMemoryStore(StoreContract, FlowStateContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        store = MemoryStore()
        await store.open()
        yield store
        await store.close()


class TestSqliteStore(StoreContract, FlowStateContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SqliteStore]:
        store = SqliteStore(f"sqlite:///{tmp_path}/state.db")
        await store.open()
        yield store
        await store.close()


async def test_a_store_of_the_schema_before_event_identity_keeps_its_data(tmp_path: Path) -> None:
    import sqlite3

    from bridge.store.sqlite.migrations import _inbox_identity

    # The store as the version before created it: every migration up to the inbox rebuild.
    before = MIGRATIONS[: MIGRATIONS.index(_inbox_identity)]
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(before, start=1):
        assert isinstance(script, str)
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute(
        "INSERT INTO inbox (id, source, body, created_at) VALUES ('1', 'api', X'7B7D', 1.0)"
    )
    conn.execute(
        "INSERT INTO inbox (id, source, body, created_at, done_at) VALUES ('2', 'api', NULL, 1, 2)"
    )
    conn.execute(
        "INSERT INTO ledger (handler, key, event_id, status, finished_at)"
        " VALUES ('h', '1', '1', 'succeeded', 1.0)"
    )
    conn.close()
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    try:
        pending = await store.inbox_pending(0, 10)
        assert [(e.id, e.source, e.body) for e in pending] == [("1", "api", b"{}")]
        assert await store.ledger_final([("h", "1")]) == {("h", "1"): "succeeded"}
        # Entries from before have an empty event source; new ones are unique by (source, id).
        assert await store.inbox_put([InboxEntry("1", b"{}")]) == [False]
        fresh = [InboxEntry("1", b"{}", event_source="s"), InboxEntry("1", b"{}", event_source="s")]
        assert await store.inbox_put(fresh) == [True, False]
        assert fresh[0].seq > pending[0].seq  # seq keeps growing past the old entries
        await store.inbox_done([pending[0].seq])
        assert [e.id for e in await store.inbox_pending(0, 10)] == ["1"]
    finally:
        await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_a_ledger_of_schema_10_is_rekeyed_by_key_first_and_keeps_its_runs(
    tmp_path: Path,
) -> None:
    """Migration 11 rebuilds the ledger keyed (key, handler): every run recorded before is
    found again, a success still is never overwritten, and an event's rows sit together."""
    import sqlite3

    path = tmp_path / "v10.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:10], start=1):
        if isinstance(script, str):
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        else:
            conn.execute("BEGIN")
            script(conn)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
    conn.executemany(
        "INSERT INTO ledger (handler, key, event_id, status, result, finished_at)"
        " VALUES (?, ?, ?, ?, ?, 1.0)",
        [
            (f"h{h}", f"s\x1fe{k}", f"e{k}", "succeeded" if k % 2 else "dead_lettered", b"[1]")
            for h in range(3)
            for k in range(40)
        ],
    )
    conn.close()
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    try:
        asked = [(f"h{h}", f"s\x1fe{k}") for h in range(4) for k in range(41)]
        found = await store.ledger_final(asked)
        # A success stays; a dead letter may be made a success by a replay.
        await store.ledger_record(
            [
                LedgerEntry("h0", "s\x1fe1", "e1", "dead_lettered"),
                LedgerEntry("h0", "s\x1fe0", "e0"),
            ]
        )
        again = await store.ledger_get([("h0", "s\x1fe1"), ("h0", "s\x1fe0")])
    finally:
        await store.close()
    assert found == {
        (f"h{h}", f"s\x1fe{k}"): "succeeded" if k % 2 else "dead_lettered"
        for h in range(3)
        for k in range(40)
    }
    assert again[("h0", "s\x1fe1")].status == "succeeded"
    assert again[("h0", "s\x1fe0")].status == "succeeded"
    assert again[("h0", "s\x1fe1")].result == [1]
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = check.execute("PRAGMA index_info(sqlite_autoindex_ledger_1)").fetchall()
        assert [c[2] for c in columns] == ["key", "handler"]
        assert check.execute("SELECT count(*) FROM ledger").fetchone()[0] == 120


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
