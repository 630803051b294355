"""The SQLite inbox's hot calls (puts, reads of pending entries, done marks) run on the
event loop's own connections, as the ledger's do: no hand-off to the store's thread
while the database is free, the store's thread when it is busy, each write committed
(or rolled back whole) before it is answered."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from bridge.errors import StoreError
from bridge.store.contracts import InboxEntry
from bridge.store.sqlite import SqliteStore
from tests.support import thread_traced_sqlite


def _entries(count: int, prefix: str = "e") -> list[InboxEntry]:
    return [InboxEntry(f"{prefix}{n}", b'{"n": %d}' % n, event_source="s") for n in range(count)]


async def test_puts_reads_and_done_marks_run_on_the_loops_connections(tmp_path: Path) -> None:
    """None of them runs a statement on the store's thread; each write is seen by
    another connection once answered; each counts one round trip of its operation."""
    store, on_thread = await thread_traced_sqlite(tmp_path / "i.db")
    try:
        before = dict(store.round_trips)
        fresh = await store.inbox_put(_entries(3))
        with sqlite3.connect(tmp_path / "i.db") as other:
            stored = other.execute("SELECT count(*) FROM inbox").fetchone()[0]
        pending = await store.inbox_pending(0, 10)
        await store.inbox_done([e.seq for e in pending[:2]])
        with sqlite3.connect(tmp_path / "i.db") as other:
            done = other.execute("SELECT count(*) FROM inbox WHERE done_at IS NOT NULL")
            marked = done.fetchone()[0]
        left = await store.inbox_pending(0, 10)
        added = {op: n - before.get(op, 0) for op, n in store.round_trips.items()}
    finally:
        await store.close()
    assert fresh == [True] * 3 and stored == 3
    assert [e.id for e in pending] == ["e0", "e1", "e2"] and pending[0].body == b'{"n": 0}'
    assert marked == 2 and [e.id for e in left] == ["e2"]
    assert on_thread == []
    assert added == {**dict.fromkeys(before, 0), "inbox_put": 1, "inbox_pending": 2,
                     "inbox_done": 1}  # fmt: skip


async def test_a_busy_database_sends_inbox_writes_to_the_thread(tmp_path: Path) -> None:
    """While another connection holds the write lock, a put is not made on the loop's
    thread (which never waits for a lock): the store's thread waits for the lock and
    makes it, and the caller is answered then, not before. Reads never wait."""
    store = SqliteStore(f"sqlite:///{tmp_path}/i.db")
    await store.open()
    await store.inbox_put(_entries(1, "first"))
    holder = sqlite3.connect(tmp_path / "i.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        put = asyncio.ensure_future(store.inbox_put(_entries(2)))
        read = await asyncio.wait_for(store.inbox_pending(0, 10), 1)
        await asyncio.sleep(0.2)
        waited = not put.done()
        holder.execute("COMMIT")
        fresh = await asyncio.wait_for(put, 5)
        after = await store.inbox_pending(0, 10)
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        await store.close()
    assert [e.id for e in read] == ["first0"]
    assert waited and fresh == [True, True]
    assert [e.id for e in after] == ["first0", "e0", "e1"]


async def test_a_put_that_fails_on_the_loop_leaves_nothing_and_the_next_one_works(
    tmp_path: Path,
) -> None:
    """A put of 600 entries is two statements; the second fails (a body SQLite cannot
    bind): the caller gets ``StoreError``, the first statement's 500 rows are rolled
    back with it, and the loop's write connection is left out of any transaction."""
    store = SqliteStore(f"sqlite:///{tmp_path}/i.db")
    await store.open()
    try:
        entries = _entries(600)
        entries[550].body = object()  # type: ignore[assignment]
        with pytest.raises(StoreError, match=r"bind|type"):
            await store.inbox_put(entries)
        left_open = store._writer is not None and store._writer.in_transaction
        stored = await store.inbox_pending(0, 1000)
        fresh = await store.inbox_put(_entries(2, "next"))
    finally:
        await store.close()
    assert stored == [] and not left_open
    assert fresh == [True, True]


async def test_the_inbox_rows_written_on_the_loop_are_checkpointed(tmp_path: Path) -> None:
    """The loop's write connection never checkpoints: the rows of the inbox's puts and
    done marks count toward the store's thread's next checkpoint, as the ledger's do."""
    store = SqliteStore(f"sqlite:///{tmp_path}/i.db")
    await store.open()
    try:
        for batch in range(20):
            entries = _entries(250, f"b{batch}-")
            await store.inbox_put(entries)
            await store.inbox_done([e.seq for e in entries])
            await asyncio.sleep(0)  # a checkpoint runs meanwhile, as under load
        if store._checkpoint is not None:
            await store._checkpoint
        checkpoints = store.round_trips["checkpoint"]
        with sqlite3.connect(tmp_path / "i.db") as other:
            done = other.execute("SELECT count(*) FROM inbox WHERE done_at IS NOT NULL")
            count = done.fetchone()[0]
    finally:
        await store.close()
    assert count == 5000
    assert checkpoints >= 2  # 10,000 rows written: one every 4,096
