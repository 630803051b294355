"""The SQLite ledger's calls from concurrent deliveries share round trips, and each caller
is answered only once its own entries are committed; a bad entry fails only its call."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

from bridge.errors import StoreError
from bridge.store.contracts import InboxEntry, LedgerEntry
from bridge.store.sqlite import SqliteStore
from tests.support import thread_traced_sqlite


async def test_concurrent_lookups_and_records_share_round_trips(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    try:
        await store.ledger_record([LedgerEntry("h", "k0", "e0")])
        before = sum(store.round_trips.values())
        finals = await asyncio.gather(*(store.ledger_final([("h", f"k{n}")]) for n in range(100)))
        await asyncio.gather(
            *(store.ledger_record([LedgerEntry("h", f"k{n}", f"e{n}")]) for n in range(1, 100))
        )
        trips = sum(store.round_trips.values()) - before
        # Committed before answered: another connection sees every entry at once.
        with sqlite3.connect(tmp_path / "l.db") as conn:
            rows = conn.execute("SELECT count(*) FROM ledger WHERE status = 'succeeded'")
            recorded = rows.fetchone()[0]
    finally:
        await store.close()
    assert finals[0] == {("h", "k0"): "succeeded"}
    assert all(f == {} for f in finals[1:])
    assert recorded == 100
    assert trips <= 4  # 200 calls; one by one they would be 200


async def test_a_bad_entry_fails_only_its_own_call(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    try:
        good = store.ledger_record([LedgerEntry("h", "good", "e1", result={"ok": 1})])
        # A lone surrogate: no UTF-8 for it, so no JSON the store can write.
        bad = store.ledger_record([LedgerEntry("h", "bad", "e2", result={"x": "\ud800"})])
        outcomes = await asyncio.gather(good, bad, return_exceptions=True)
        found = await store.ledger_final([("h", "good"), ("h", "bad")])
    finally:
        await store.close()
    assert outcomes[0] is None
    assert isinstance(outcomes[1], StoreError)
    assert found == {("h", "good"): "succeeded"}


async def test_lookups_do_not_wait_behind_the_writer(tmp_path: Path) -> None:
    """Lookups are read on a connection of their own, on the loop's thread: with the
    store's thread held by a write, 50 lookups are answered (one read, no hand-off), and
    they see what was committed before them."""
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    release = asyncio.Event()
    held = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    try:
        await store.ledger_record([LedgerEntry("h", "k0", "e0")])

        def hold(conn: sqlite3.Connection) -> None:
            loop.call_soon_threadsafe(held.set_result, None)
            while not release.is_set():
                threading.Event().wait(0.005)

        writer = asyncio.ensure_future(store._call(hold))
        await held
        before = dict(store.round_trips)
        finals = await asyncio.gather(*(store.ledger_final([("h", f"k{n}")]) for n in range(50)))
        writer_done = writer.done()
        release.set()
        await writer
    finally:
        release.set()
        await store.close()
    assert not writer_done  # the store's thread was busy all along
    assert finals[0] == {("h", "k0"): "succeeded"}
    assert all(f == {} for f in finals[1:])
    added = {op: n - before.get(op, 0) for op, n in store.round_trips.items()}
    assert added == {**dict.fromkeys(before, 0), "ledger_read": 1}


async def test_a_busy_read_connection_sends_lookups_to_the_thread(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    try:
        await store.ledger_record([LedgerEntry("h", "k0", "e0")])
        reader = store._reader
        assert reader is not None
        store._reader = _Failing(reader)  # type: ignore[assignment]
        before = dict(store.round_trips)
        found = await store.ledger_final([("h", "k0"), ("h", "k1")])
        store._reader = reader
    finally:
        await store.close()
    assert found == {("h", "k0"): "succeeded"}
    assert store.round_trips["ledger_batch"] == before.get("ledger_batch", 0) + 1


class _Failing:
    """A read connection that answers every statement as SQLite does when busy."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, *args: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    def close(self) -> None:
        self.conn.close()


def test_a_batch_of_entries_is_written_in_order_in_few_statements() -> None:
    """Many rows per statement: each of 1,000 entries is written, and a key that comes
    twice keeps its success whichever comes first."""
    from bridge.store.sqlite.ledger import ledger_insert
    from bridge.store.sqlite.migrations import migrate

    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    statements: list[str] = []
    conn.set_trace_callback(lambda sql: statements.append(sql) if "INSERT" in sql else None)
    ledger_insert(
        conn,
        [
            LedgerEntry("h", "k", "e1", "succeeded", 1),
            LedgerEntry("h", "k", "e2", "cancelled", 2),
            LedgerEntry("h", "j", "e3", "cancelled", 3),
            LedgerEntry("h", "j", "e4", "succeeded", 4),
            *(LedgerEntry("h", f"x{n}", "e", "succeeded", n) for n in range(1000)),
        ],
    )
    rows = conn.execute("SELECT key, status, result FROM ledger WHERE key IN ('j', 'k')")
    found = sorted(rows.fetchall())
    total = conn.execute("SELECT count(*), sum(result) FROM ledger WHERE key LIKE 'x%'").fetchone()
    conn.close()
    assert found == [("j", "succeeded", b"4"), ("k", "succeeded", b"1")]
    assert total == (1000, sum(range(1000)))
    assert len(statements) <= 8  # 1,004 rows: 3 x 256, 128, 64, 32, 8, 4


def test_entries_with_and_without_results_are_written_in_order() -> None:
    """Runs that returned nothing have NULL written in the statement, the others their
    result: a batch that mixes them is written in order (the same key dead-lettered
    without a result, then succeeded with one, then dead-lettered with one, keeps the
    success), every result comes back as the JSON it was, and the runs without results
    store SQL NULL, not JSON null."""
    from bridge.store.sqlite.ledger import ledger_insert, one_statement
    from bridge.store.sqlite.migrations import migrate

    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    entries = [
        LedgerEntry("h", "k", "e1", "dead_lettered", None),
        LedgerEntry("h", "k", "e2", "succeeded", {"n": 2}),
        LedgerEntry("h", "k", "e3", "dead_lettered", "late"),
        *(LedgerEntry("h", f"x{n}", "e", "succeeded", n if n % 3 else None) for n in range(300)),
    ]
    ledger_insert(conn, entries)
    kept = conn.execute("SELECT event_id, status, result FROM ledger WHERE key = 'k'").fetchone()
    nulls = conn.execute("SELECT count(*) FROM ledger WHERE result IS NULL").fetchone()[0]
    results = dict(conn.execute("SELECT key, result FROM ledger WHERE key LIKE 'x%'").fetchall())
    conn.close()
    assert kept == ("e2", "succeeded", b'{"n":2}')
    assert nulls == 100  # x0, x3, ..., x297
    assert results == {f"x{n}": str(n).encode() if n % 3 else None for n in range(300)}
    assert one_statement([LedgerEntry("h", "a", "e"), LedgerEntry("h", "b", "e")])
    assert not one_statement([LedgerEntry("h", "a", "e"), LedgerEntry("h", "b", "e", result=1)])
    assert not one_statement([LedgerEntry("h", f"{n}", "e") for n in range(3)])


async def test_a_bad_entry_among_several_statements_fails_only_its_own_call(
    tmp_path: Path,
) -> None:
    """Three entries go in two statements (2 + 1 rows), under a savepoint: the good ones
    are still recorded when the bad one fails."""
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    try:
        calls = [
            store.ledger_record([LedgerEntry("h", "good1", "e1")]),
            store.ledger_record([LedgerEntry("h", "bad", "e2", result={"x": "\ud800"})]),
            store.ledger_record([LedgerEntry("h", "good2", "e3")]),
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        found = await store.ledger_final([("h", "good1"), ("h", "bad"), ("h", "good2")])
    finally:
        await store.close()
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], StoreError)
    assert found == {("h", "good1"): "succeeded", ("h", "good2"): "succeeded"}


async def test_an_operation_alone_in_its_transaction_that_fails_leaves_nothing(
    tmp_path: Path,
) -> None:
    """An operation alone in a batch runs without a savepoint: when it fails, the
    transaction's rollback undoes what it wrote, and the thread goes on."""
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()

    def write_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO ledger (handler, key, event_id, status, finished_at)"
            " VALUES ('h', 'half', 'e', 'succeeded', 0)"
        )
        raise ValueError("half-way")

    try:
        failed = await asyncio.gather(store._call(write_then_fail), return_exceptions=True)
        await store.ledger_record([LedgerEntry("h", "after", "e")])
        found = await store.ledger_final([("h", "half"), ("h", "after")])
    finally:
        await store.close()
    assert isinstance(failed[0], StoreError) and "half-way" in str(failed[0])
    assert found == {("h", "after"): "succeeded"}


def test_lookups_of_many_handlers_are_few_statements() -> None:
    """The keys of every handler looked up in one turn are one statement per 512 distinct
    keys, whatever the handlers: 4 handlers of one key, one; 150 handlers of 5 keys,
    one; 2 handlers of 600 keys, two."""
    from bridge.store.sqlite.batch import _final
    from bridge.store.sqlite.migrations import migrate

    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    conn.executemany(
        "INSERT INTO ledger (handler, key, event_id, status, finished_at) VALUES (?, ?, 'e', ?, 0)",
        [
            (f"h{h}", f"k{k}", "succeeded" if k % 2 else "running")
            for h in range(150)
            for k in range(5)
        ],
    )
    statements: list[str] = []
    conn.set_trace_callback(lambda sql: statements.append(sql) if "SELECT" in sql else None)
    few = _final(conn, [{(f"h{h}", "k1") for h in range(4)} | {("h0", "missing")}])
    counted = len(statements)
    many = _final(conn, [{(f"h{h}", f"k{k}") for h in range(150) for k in range(5)}])
    counted_many = len(statements) - counted
    wide = _final(conn, [{(f"h{h}", f"k{k}") for h in range(2) for k in range(600)}])
    conn.close()
    assert few == {(f"h{h}", "k1"): "succeeded" for h in range(4)}
    assert counted == 1
    assert many == {
        (f"h{h}", f"k{k}"): "succeeded" if k % 2 else "running"
        for h in range(150)
        for k in range(5)
    }
    assert counted_many == 1
    assert wide == {
        (f"h{h}", f"k{k}"): "succeeded" if k % 2 else "running" for h in range(2) for k in range(5)
    }
    assert len(statements) == 4  # 1 + 1 + 2


async def test_operations_batched_together_commit_once_and_a_failing_one_fails_alone(
    tmp_path: Path,
) -> None:
    """Operations queued together run in one transaction without a savepoint each; when
    one fails, the batch runs again with one savepoint per operation: the others are
    written exactly once, the failing one writes nothing."""
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    statements: list[str] = []

    def insert(key: str, fail: bool = False) -> Any:
        def op(conn: sqlite3.Connection) -> str:
            if not statements:
                conn.set_trace_callback(statements.append)
            conn.execute(
                "INSERT INTO ledger (handler, key, event_id, status, finished_at)"
                " VALUES ('h', ?, 'e', 'succeeded', 0)",
                (key,),
            )
            if fail:
                raise ValueError("half-way")
            return key

        return op

    # Hold the store's thread, so the next calls queue up and run as one batch.
    held = threading.Event()
    blocker = asyncio.ensure_future(store._call(lambda conn: held.wait(5)))
    await asyncio.sleep(0.05)
    together = [store._call(insert(f"ok{n}")) for n in range(5)]
    calls = asyncio.gather(*together, return_exceptions=True)
    await asyncio.sleep(0.05)
    held.set()
    await blocker
    clean = await calls
    assert clean == [f"ok{n}" for n in range(5)]
    one_go = [s for s in statements if s.startswith(("SAVEPOINT", "RELEASE", "COMMIT"))]
    statements.clear()
    held.clear()
    blocker = asyncio.ensure_future(store._call(lambda conn: held.wait(5)))
    await asyncio.sleep(0.05)
    mixed = [store._call(insert(f"a{n}", fail=n == 2)) for n in range(4)]
    calls = asyncio.gather(*mixed, return_exceptions=True)
    await asyncio.sleep(0.05)
    held.set()
    await blocker
    outcomes = await calls
    try:
        found = await store.ledger_final([("h", f"a{n}") for n in range(4)])
        count = await store._call(lambda c: c.execute("SELECT count(*) FROM ledger").fetchone())
    finally:
        await store.close()
    assert one_go == ["COMMIT"]  # five operations, one transaction, no savepoints
    assert outcomes[:2] == ["a0", "a1"] and outcomes[3] == "a3"
    assert isinstance(outcomes[2], StoreError) and "half-way" in str(outcomes[2])
    assert found == {("h", "a0"): "succeeded", ("h", "a1"): "succeeded", ("h", "a3"): "succeeded"}
    assert count[0] == 8  # 5 + 3: nothing twice, nothing of the failed one


def test_inbox_entries_go_in_in_order_in_few_statements_and_the_first_of_an_identity_wins() -> None:
    from bridge.store.contracts import InboxEntry
    from bridge.store.sqlite.inbox import inbox_insert
    from bridge.store.sqlite.migrations import migrate

    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    inbox_insert(conn, [InboxEntry(id="old", body=b"0", event_source="s")])
    statements: list[str] = []
    conn.set_trace_callback(lambda sql: statements.append(sql) if "INSERT" in sql else None)
    entries = [
        InboxEntry(id="old", body=b"again", event_source="s"),  # known already
        InboxEntry(id="x", body=b"1", event_source="s"),
        InboxEntry(id="x", body=b"2", event_source="s"),  # twice in one call: the first wins
        InboxEntry(id="x", body=b"3", event_source="other"),  # another producer's id x
        *(InboxEntry(id=f"n{n}", body=b"n", event_source="s") for n in range(1200)),
    ]
    fresh = inbox_insert(conn, entries)
    stored = conn.execute("SELECT seq, id, event_source, body FROM inbox ORDER BY seq").fetchall()
    conn.close()
    assert fresh == [False, True, False, True, *([True] * 1200)]
    assert entries[0].seq == entries[2].seq == 0  # not stored: no seq
    assert 1 < entries[1].seq < entries[3].seq < entries[4].seq  # after "old", in order
    assert [(row[1], row[2], row[3]) for row in stored[:4]] == [
        ("old", "s", b"0"),
        ("x", "s", b"1"),
        ("x", "other", b"3"),
        ("n0", "s", b"n"),
    ]
    assert [e.seq for e in entries[4:]] == [row[0] for row in stored[3:]]  # seq in their order
    assert len(stored) == 1203
    assert len(statements) == 3  # 1,203 new rows, 500 a statement


async def test_a_lone_call_of_one_statement_runs_without_a_transaction_around_it(
    tmp_path: Path,
) -> None:
    """The inbox's puts, reads and done marks and one caller's ledger successes are one
    statement each: alone on the store's thread they run as that statement only (SQLite
    commits it as it ends), without BEGIN and COMMIT. Each is committed once answered;
    a lone statement that fails is answered ``StoreError`` and leaves no transaction.
    (Ledger successes go to the store's thread when the database is busy; here, without
    the loop's write connection, always.)"""
    from bridge.store.contracts import InboxEntry

    store, statements = await thread_traced_sqlite(tmp_path / "l.db")
    _without_loop_writes(store)
    try:
        statements.clear()
        fresh = await store.inbox_put([InboxEntry(f"e{n}", b"{}") for n in range(3)])
        put = list(statements)
        statements.clear()
        pending = await store.inbox_pending(0, 10)
        await store.inbox_done([e.seq for e in pending[:2]])
        await store.ledger_record([LedgerEntry(f"h{n}", "k", "e") for n in range(4)])
        rest = list(statements)
        with sqlite3.connect(tmp_path / "l.db") as other:  # committed: seen by another
            done = other.execute("SELECT count(*) FROM inbox WHERE done_at IS NOT NULL")
            ledger = other.execute("SELECT count(*) FROM ledger")
            counts = (done.fetchone()[0], ledger.fetchone()[0])
        bad = LedgerEntry("h", "bad", "e", result={"x": "\ud800"})  # no UTF-8 for it
        failed = await asyncio.gather(store.ledger_record([bad]), return_exceptions=True)
        open_after = await store._call(lambda conn: conn.in_transaction, single=True)
        after = await store.ledger_final([("h", "bad"), ("h0", "k")])
    finally:
        await store.close()
    assert fresh == [True] * 3
    assert len(put) == 1 and put[0].startswith("INSERT")
    assert [s.split()[0] for s in rest] == ["SELECT", "UPDATE", "INSERT"]
    assert counts == (2, 4)
    assert isinstance(failed[0], StoreError)
    assert open_after is False
    assert after == {("h0", "k"): "succeeded"}


def _without_loop_writes(store: SqliteStore) -> None:
    """Send the store's writes and reads to its thread, as a busy database does."""
    for conn in (store._writer, store._reader):
        if conn is not None:
            conn.close()
    store._writer = store._reader = None


async def test_ledger_writes_are_made_on_the_loops_thread_and_committed_when_answered(
    tmp_path: Path,
) -> None:
    """A batch of successes is written on the loop's own write connection: the store's
    thread runs no statement for it, and another connection sees it once answered."""
    store, on_thread = await thread_traced_sqlite(tmp_path / "l.db")
    try:
        before = dict(store.round_trips)
        await asyncio.gather(
            *(store.ledger_record([LedgerEntry(f"h{n}", "k", "e")]) for n in range(4))
        )
        with sqlite3.connect(tmp_path / "l.db") as other:
            seen = other.execute("SELECT count(*) FROM ledger").fetchone()[0]
        added = {op: n - before.get(op, 0) for op, n in store.round_trips.items()}
    finally:
        await store.close()
    assert seen == 4
    assert on_thread == []
    assert added == {**dict.fromkeys(before, 0), "ledger_batch": 1}  # 4 callers, 1 write


async def test_a_busy_database_sends_ledger_writes_to_the_thread(tmp_path: Path) -> None:
    """While another connection holds the write lock, a batch is not written on the
    loop's thread (which never waits for a lock): the store's thread waits for the lock
    and writes it, and its callers are answered then, not before."""
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    holder = sqlite3.connect(tmp_path / "l.db", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    try:
        writes = asyncio.ensure_future(store.ledger_record([LedgerEntry("h", "k", "e")]))
        await asyncio.sleep(0.2)
        waited = not writes.done()
        holder.execute("COMMIT")
        await asyncio.wait_for(writes, 5)
        found = await store.ledger_final([("h", "k")])
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()
        await store.close()
    assert waited
    assert found == {("h", "k"): "succeeded"}


async def test_the_loop_writes_on_while_a_checkpoint_copies_and_waits_while_it_restarts(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A checkpoint's copy and sync (its long part) runs on the store's thread while the
    loop goes on writing on its own connection: a record made meanwhile is committed
    while the thread is still held in the copy. Only its restart of the WAL sends the
    loop's writes to the thread: a record made then is answered once it is done."""
    import bridge.store.sqlite.batch as batch

    copying, restarting = threading.Event(), threading.Event()
    let_copy, let_restart = threading.Event(), threading.Event()
    copy, checkpoint = batch._copy, batch._checkpoint

    def held_copy(conn: sqlite3.Connection) -> None:
        copying.set()
        let_copy.wait(10)
        copy(conn)

    def held_checkpoint(conn: sqlite3.Connection) -> bool:
        restarting.set()
        let_restart.wait(10)
        return checkpoint(conn)

    monkeypatch.setattr(batch, "_copy", held_copy)
    monkeypatch.setattr(batch, "_checkpoint", held_checkpoint)
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    try:
        rows = [LedgerEntry("h", f"k{n}", f"e{n}") for n in range(batch._CHECKPOINT_ROWS)]
        await store.ledger_record(rows)  # enough rows for a checkpoint
        assert await asyncio.to_thread(copying.wait, 5)
        during_copy = [LedgerEntry("h", "copy", "e-copy")]
        await asyncio.wait_for(store.ledger_record(during_copy), 5)  # the thread is held
        let_copy.set()
        assert await asyncio.to_thread(restarting.wait, 5)
        during_restart = asyncio.ensure_future(
            store.ledger_record([LedgerEntry("h", "restart", "e-restart")])
        )
        await asyncio.sleep(0.05)
        waited = not during_restart.done()
        let_restart.set()
        await asyncio.wait_for(during_restart, 5)
        if store._checkpoint is not None:
            await store._checkpoint
        found = await store.ledger_final([("h", "copy"), ("h", "restart")])
        trips = dict(store.round_trips)
        with sqlite3.connect(tmp_path / "l.db") as other:
            _, frames, _ = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        let_copy.set()
        let_restart.set()
        await store.close()
    assert waited
    assert found == {("h", "copy"): "succeeded", ("h", "restart"): "succeeded"}
    assert trips["checkpoint_copy"] == 1 and trips["checkpoint"] == 1
    assert frames < 10, f"{frames} pages in the WAL"  # restarted: only the last record


async def test_the_stores_thread_checkpoints_what_the_loops_thread_wrote(
    tmp_path: Path,
) -> None:
    """The loop's write connection never checkpoints (it would sync the files to disk on
    the loop's thread); the store's thread does, every few thousand rows, and restarts
    the WAL: after 40,000 rows (over 1,100 pages written) the WAL holds only what came
    since the last checkpoint."""
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    try:
        assert store._writer is not None
        assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        for batch in range(100):
            entries = [
                LedgerEntry(f"h{n % 4}", f"source\x1fevent-{batch}-{n // 4}", "e")
                for n in range(400)
            ]
            await store.ledger_record(entries)
            await asyncio.sleep(0)  # a checkpoint runs meanwhile, as under load
        if store._checkpoint is not None:
            await store._checkpoint
        checkpoints = store.round_trips["checkpoint"]
        found = await store.ledger_final([("h3", "source\x1fevent-99-99")])
        with sqlite3.connect(tmp_path / "l.db") as other:
            _, frames, _ = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            rows = other.execute("SELECT count(*) FROM ledger").fetchone()[0]
    finally:
        await store.close()
    assert checkpoints >= 4  # one every 4,096 rows written since the last one ended
    assert found == {("h3", "source\x1fevent-99-99"): "succeeded"} and rows == 40_000
    assert frames < 500, f"{frames} pages in the WAL"  # without checkpoints: over 1,100


def _temp_files() -> list[str]:
    """The temporary files SQLite has open in this process (it unlinks each as it makes
    it, so only an open descriptor shows one)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if "etilqs_" in target:  # SQLite's prefix for its temporary files
                found.append(target)
    return found


async def test_writes_of_random_keys_keep_their_statement_journals_in_memory(
    tmp_path: Path,
) -> None:
    """Successes and inbox entries with random keys change a page each; written many to a
    statement inside a transaction, their statement journal outgrew SQLite's 64 KiB and
    went to a temporary file, made for each statement. Now no temporary file is open at
    any step of such statements, on the loop's write connection or on the store's thread
    (a busy database's path), and every row is written."""
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    seen: list[str] = []

    def watch() -> int:
        seen.extend(_temp_files())
        return 0  # go on

    assert store._writer is not None
    store._writer.set_progress_handler(watch, 500)
    await store._call(lambda conn: conn.set_progress_handler(watch, 500))

    def entries(count: int) -> list[LedgerEntry]:
        return [LedgerEntry("h", uuid.uuid4().hex, "e") for _ in range(count)]

    def inbox(count: int) -> list[InboxEntry]:
        return [InboxEntry(uuid.uuid4().hex, b"{}", event_source="s") for _ in range(count)]

    try:
        for _ in range(8):  # on the loop's connection: 8 batches of 4 callers, 64 rows each
            await asyncio.gather(*(store.ledger_record(entries(64)) for _ in range(4)))
            await store.inbox_put(inbox(256))
        on_loop = list(seen)
        _without_loop_writes(store)
        for _ in range(4):  # on the store's thread, each batch in a transaction
            await asyncio.gather(*(store.ledger_record(entries(64)) for _ in range(4)))
            await store.inbox_put(inbox(600))
        written = await store._call(
            lambda c: (
                c.execute("SELECT count(*) FROM ledger").fetchone()[0],
                c.execute("SELECT count(*) FROM inbox").fetchone()[0],
            )
        )
    finally:
        await store.close()
    assert written == (12 * 4 * 64, 8 * 256 + 4 * 600)
    assert on_loop == [] and seen == []
