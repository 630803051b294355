"""Every SQLite store call answers or raises ``StoreError`` within its deadline.

The deadlines come from the store URL (``?timeout=...&ping_timeout=...``,
``bridge.store.deadlines``). A call whose answer does not come back from the store's
thread in time (the thread is stuck on a slow operation, or waits for another
process's lock) fails with ``StoreError``, which the runtime's "store outage: hold
and retry" path handles, instead of hanging the delivery.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from bridge.errors import StoreError
from bridge.store import SqliteStore, create_store
from bridge.store.contracts import InboxEntry, LedgerEntry
from bridge.store.deadlines import Deadlines

TIMEOUT = 0.3
SLACK = 2.0  # scheduling on a busy machine; far below the stall each test creates


async def test_a_stuck_store_thread_fails_calls_within_the_deadline(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db?timeout={TIMEOUT}&ping_timeout={TIMEOUT}")
    await store.open()
    try:
        stall = asyncio.ensure_future(store._call(lambda c: time.sleep(TIMEOUT * 10), 60.0))
        await asyncio.sleep(0.05)  # the thread is in the stall
        started = time.monotonic()
        with pytest.raises(StoreError, match="no answer within"):
            await store.inbox_put([InboxEntry(id="late", body=b"{}")])
        assert time.monotonic() - started < TIMEOUT + SLACK
        assert await store.ping() is False
        await stall
        # The call that was answered StoreError had not started: it was skipped, not run late.
        assert await store.inbox_pending(0, 10) == []
        assert await store.ping() is True
    finally:
        await store.close()


async def test_another_process_holding_the_lock_fails_calls_within_the_deadline(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(f"sqlite:///{path}?timeout={TIMEOUT}")
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another process (a `bridge dlq` command, say)
        started = time.monotonic()
        with pytest.raises(StoreError):
            await store.ledger_record([LedgerEntry("h", "k", "e")])
        assert time.monotonic() - started < TIMEOUT + SLACK
        other.execute("ROLLBACK")
        await store.ledger_record([LedgerEntry("h", "k", "e")])
        assert await store.ledger_final([("h", "k")]) == {("h", "k"): "succeeded"}
    finally:
        other.close()
        await store.close()


def test_deadlines_come_from_the_url() -> None:
    assert SqliteStore("sqlite:///x.db").deadlines == Deadlines(5.0, 2.0)
    store = SqliteStore("sqlite:///x.db?timeout=1.5&ping_timeout=0.5")
    assert (store.path, store.deadlines) == ("x.db", Deadlines(1.5, 0.5))
    for bad in ("0", "-1", "soon", "inf"):
        with pytest.raises(StoreError, match="timeout must be a positive number"):
            create_store(f"sqlite:///x.db?timeout={bad}")


def test_postgres_deadlines_stay_out_of_the_dsn() -> None:
    from bridge.store.postgres import PostgresStore

    store = PostgresStore("postgresql://u@h/db?schema=s&timeout=3&ping_timeout=1&sslmode=disable")
    assert store.deadlines == Deadlines(3.0, 1.0)
    assert (store.dsn, store.schema) == ("postgresql://u@h/db?sslmode=disable", "s")
