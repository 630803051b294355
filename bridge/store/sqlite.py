"""The SQLite store: the embedded default for one replica.

One connection lives on one thread of its own. Operations queue up for it and
are executed in batches, one transaction per batch (group commit): under load,
hundreds of ledger writes share one commit. WAL journal with
``synchronous=NORMAL`` survives a killed process (not a power cut, which the
PostgreSQL store is for).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import orjson

from bridge.errors import StoreError
from bridge.store.base import (
    DeadLetter,
    DeadLetterStatus,
    EventRecord,
    InboxEntry,
    Join,
    JoinStatus,
    LedgerEntry,
    ParkedRun,
    RunRecord,
    event_record_from_dict,
    parked_from_dict,
    run_from_dict,
)

R = TypeVar("R")
_BATCH = 512

MIGRATIONS: list[str] = [
    # 1: ledger, dead letters, inbox
    """
    CREATE TABLE ledger (
        handler TEXT NOT NULL,
        key TEXT NOT NULL,
        event_id TEXT NOT NULL,
        status TEXT NOT NULL,
        result BLOB,
        finished_at REAL NOT NULL,
        PRIMARY KEY (handler, key)
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        id TEXT PRIMARY KEY,
        created_at REAL NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        connector TEXT NOT NULL,
        handler TEXT,
        event_id TEXT,
        record BLOB NOT NULL
    );
    CREATE INDEX dead_letters_by_time ON dead_letters (created_at DESC);
    CREATE TABLE inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        handler TEXT,
        body BLOB,
        created_at REAL NOT NULL,
        done_at REAL
    );
    CREATE INDEX inbox_pending ON inbox (seq) WHERE done_at IS NULL;
    CREATE INDEX inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL;
    """,
    # 2: orchestration: parked retries, durable steps, joins, cron positions
    """
    CREATE TABLE parked (
        id TEXT PRIMARY KEY,
        handler TEXT NOT NULL,
        due_at REAL NOT NULL,
        leased_until REAL NOT NULL DEFAULT 0,
        record BLOB NOT NULL
    );
    CREATE INDEX parked_due ON parked (due_at);
    CREATE TABLE steps (
        event_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        step TEXT NOT NULL,
        result BLOB,
        created_at REAL NOT NULL,
        PRIMARY KEY (event_id, handler, step)
    ) WITHOUT ROWID;
    CREATE TABLE joins (
        id TEXT PRIMARY KEY,
        handler TEXT NOT NULL,
        status TEXT NOT NULL,
        expected INTEGER,
        deadline REAL NOT NULL,
        start BLOB NOT NULL,
        created_at REAL NOT NULL,
        closed_at REAL
    );
    CREATE INDEX joins_open ON joins (handler, created_at) WHERE status = 'open';
    CREATE INDEX joins_deadline ON joins (deadline) WHERE status = 'open';
    CREATE TABLE join_members (
        join_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        value BLOB,
        UNIQUE (join_id, member_id)
    );
    CREATE TABLE join_buffer (
        handler TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event BLOB NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (handler, event_id)
    );
    CREATE TABLE cron (name TEXT PRIMARY KEY, last_tick REAL NOT NULL);
    """,
    # 3: run history for the developer UI
    """
    CREATE TABLE history_events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        received_at REAL NOT NULL,
        correlation_id TEXT,
        parent_id TEXT,
        record BLOB NOT NULL
    );
    CREATE INDEX history_by_time ON history_events (received_at DESC, id DESC);
    CREATE INDEX history_by_correlation ON history_events (correlation_id);
    CREATE INDEX history_by_parent ON history_events (parent_id);
    CREATE TABLE history_runs (
        event_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        record BLOB NOT NULL,
        PRIMARY KEY (event_id, handler)
    ) WITHOUT ROWID;
    """,
    # 4: inbox leases, so that processes sharing a store never take the same entry
    """
    ALTER TABLE inbox ADD COLUMN leased_until REAL NOT NULL DEFAULT 0;
    """,
    # 5: dead letters found by event (the UI's event page) and by event type
    """
    ALTER TABLE dead_letters ADD COLUMN event_type TEXT;
    CREATE INDEX dead_letters_by_event ON dead_letters (event_id);
    CREATE INDEX dead_letters_by_type ON dead_letters (event_type, created_at DESC);
    """,
]


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path.db`` -> ``rel/path.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    if not url.startswith("sqlite://"):
        raise StoreError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :]
    if rest.startswith("/"):
        rest = rest[1:]
    return rest or ":memory:"


class _Op:
    __slots__ = ("fn", "future", "loop")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()


class SqliteStore:
    """The store contract on SQLite, with group commit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.shared = False
        self.path = sqlite_path(url)
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ plumbing

    async def open(self) -> None:
        if self._thread is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        ready: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="sqlite-store", daemon=True
        )
        self._thread.start()
        error = await asyncio.get_running_loop().run_in_executor(None, ready.get)
        if error is not None:
            self._thread = None
            raise StoreError(f"cannot open {self.path}: {error}") from error

    async def close(self) -> None:
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    async def _call(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        if self._thread is None or self._closed:
            raise StoreError("the store is not open")
        op = _Op(fn, asyncio.get_running_loop())
        self._queue.put(op)
        result: R = await op.future
        return result

    def _serve(self, ready: queue.SimpleQueue[BaseException | None]) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            _migrate(conn)
        except BaseException as exc:  # reported to open(), which raises StoreError
            ready.put(exc)
            return
        ready.put(None)
        try:
            while True:
                op = self._queue.get()
                if op is None:
                    return
                batch = [op]
                while len(batch) < _BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)
                        break
                    batch.append(nxt)
                self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        results: list[tuple[_Op, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = op.fn(conn)
                    if isinstance(value, sqlite3.Cursor):
                        # A cursor must die on this thread: finalized on the event
                        # loop's thread it resets a cached statement this thread may
                        # be running (SQLITE_MISUSE, "bad parameter or other API misuse").
                        value.close()
                        value = None
                    results.append((op, value, None))
                    conn.execute("RELEASE op")
                except Exception as exc:  # one bad operation must not sink the batch or the thread
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((op, None, StoreError(f"{type(exc).__name__}: {exc}")))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreError(f"sqlite: {exc}")
            for op in batch:
                op.loop.call_soon_threadsafe(_resolve, op.future, None, failure)
            return
        for op, value, error in results:
            op.loop.call_soon_threadsafe(_resolve, op.future, value, error)

    async def ping(self) -> bool:
        try:
            await self._call(lambda c: c.execute("SELECT 1").fetchone())
        except StoreError:
            return False
        return True

    # ------------------------------------------------------------------ ledger

    async def ledger_final(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not keys:
            return {}

        def read(conn: sqlite3.Connection) -> dict[tuple[str, str], str]:
            found: dict[tuple[str, str], str] = {}
            for handler, key in keys:
                row = conn.execute(
                    "SELECT status FROM ledger WHERE handler = ? AND key = ?", (handler, key)
                ).fetchone()
                if row is not None:
                    found[(handler, key)] = row[0]
            return found

        return await self._call(read)

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        rows = [
            (e.handler, e.key, e.event_id, e.status, _dump(e.result), e.finished_at)
            for e in entries
        ]
        await self._call(
            lambda c: c.executemany(
                "INSERT INTO ledger (handler, key, event_id, status, result, finished_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (handler, key) DO UPDATE SET"
                " status = excluded.status, result = excluded.result,"
                " finished_at = excluded.finished_at, event_id = excluded.event_id"
                " WHERE ledger.status != 'succeeded'",
                rows,
            )
        )

    async def ledger_entries(self, limit: int = 1000) -> list[LedgerEntry]:
        """Recent ledger entries (for tests and the UI)."""

        def read(conn: sqlite3.Connection) -> list[LedgerEntry]:
            rows = conn.execute(
                "SELECT handler, key, event_id, status, result, finished_at FROM ledger"
                " ORDER BY finished_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [LedgerEntry(r[0], r[1], r[2], r[3], _load(r[4]), r[5]) for r in rows]

        return await self._call(read)

    # ------------------------------------------------------------------ dead letters

    async def dead_letter_add(self, letter: DeadLetter) -> None:
        row = (
            letter.id,
            letter.created_at,
            letter.status,
            letter.reason,
            letter.connector,
            letter.handler,
            letter.event_id,
            letter.event_type,
            _dump(letter.to_dict()),
        )
        await self._call(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO dead_letters"
                " (id, created_at, status, reason, connector, handler, event_id, event_type, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    async def dead_letters(
        self,
        *,
        status: DeadLetterStatus | None = None,
        handler: str | None = None,
        limit: int = 100,
        offset: int = 0,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> list[DeadLetter]:
        clauses: list[str] = []
        args: list[str] = []
        for column, value in (
            ("status", status),
            ("handler", handler),
            ("event_id", event_id),
            ("event_type", event_type),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT record, status FROM dead_letters {where} ORDER BY created_at DESC LIMIT ? OFFSET ?"
        rows = await self._call(lambda c: c.execute(sql, (*args, limit, offset)).fetchall())
        return [_letter(r[0], r[1]) for r in rows]

    async def dead_letter_get(self, letter_id: str) -> DeadLetter | None:
        row = await self._call(
            lambda c: c.execute(
                "SELECT record, status FROM dead_letters WHERE id = ?", (letter_id,)
            ).fetchone()
        )
        return None if row is None else _letter(row[0], row[1])

    async def dead_letter_set_status(self, letter_id: str, status: DeadLetterStatus) -> bool:
        count = await self._call(
            lambda c: (
                c.execute(
                    "UPDATE dead_letters SET status = ? WHERE id = ?", (status, letter_id)
                ).rowcount
            )
        )
        return bool(count)

    # ------------------------------------------------------------------ inbox

    async def inbox_put(self, entries: Sequence[InboxEntry]) -> list[bool]:
        return await self._call(lambda c: _inbox_insert(c, entries))

    async def inbox_pending(self, after_seq: int, limit: int) -> list[InboxEntry]:
        rows = await self._call(
            lambda c: c.execute(
                "SELECT seq, id, source, handler, body, created_at FROM inbox"
                " WHERE done_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        )
        return [_entry(r) for r in rows]

    async def inbox_done(self, seqs: Iterable[int]) -> None:
        now = time.time()
        rows = [(now, s) for s in seqs]
        await self._call(
            lambda c: c.executemany("UPDATE inbox SET done_at = ?, body = NULL WHERE seq = ?", rows)
        )

    async def inbox_claim(self, now: float, limit: int, lease: float) -> list[InboxEntry]:
        def claim(conn: sqlite3.Connection) -> list[InboxEntry]:
            rows = conn.execute(
                "SELECT seq, id, source, handler, body, created_at FROM inbox"
                " WHERE done_at IS NULL AND leased_until < ? ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE inbox SET leased_until = ? WHERE seq = ?",
                [(now + lease, r[0]) for r in rows],
            )
            return [_entry(r) for r in rows]

        return await self._call(claim)

    async def inbox_lease(self, seqs: Iterable[int], until: float) -> None:
        rows = [(until, s) for s in seqs]
        await self._call(
            lambda c: c.executemany("UPDATE inbox SET leased_until = ? WHERE seq = ?", rows)
        )

    async def inbox_purge(self, older_than: float) -> int:
        count: int = await self._call(
            lambda c: (
                c.execute(
                    "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at < ?", (older_than,)
                ).rowcount
            )
        )
        return count

    # ------------------------------------------------------------------ ledger (read)

    async def ledger_get(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], LedgerEntry]:
        def read(conn: sqlite3.Connection) -> dict[tuple[str, str], LedgerEntry]:
            found = {}
            for handler, key in keys:
                row = conn.execute(
                    "SELECT event_id, status, result, finished_at FROM ledger"
                    " WHERE handler = ? AND key = ?",
                    (handler, key),
                ).fetchone()
                if row is not None:
                    found[(handler, key)] = LedgerEntry(
                        handler, key, row[0], row[1], _load(row[2]), row[3]
                    )
            return found

        return await self._call(read) if keys else {}

    # ------------------------------------------------------------------ parked retries

    async def parked_put(self, runs: Sequence[ParkedRun]) -> None:
        rows = [(r.id, r.handler, r.due_at, _dump(asdict(r))) for r in runs]
        await self._call(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO parked (id, handler, due_at, leased_until, record)"
                " VALUES (?, ?, ?, 0, ?)",
                rows,
            )
        )

    async def parked_claim(self, now: float, limit: int, lease: float) -> list[ParkedRun]:
        def claim(conn: sqlite3.Connection) -> list[ParkedRun]:
            rows = conn.execute(
                "SELECT id, record FROM parked WHERE due_at <= ? AND leased_until < ?"
                " ORDER BY due_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE parked SET leased_until = ? WHERE id = ?",
                [(now + lease, r[0]) for r in rows],
            )
            return [parked_from_dict(_load(r[1])) for r in rows]

        return await self._call(claim)

    async def parked_done(self, ids: Iterable[str]) -> None:
        rows = [(i,) for i in ids]
        await self._call(lambda c: c.executemany("DELETE FROM parked WHERE id = ?", rows))

    async def parked_lease(self, ids: Iterable[str] | None, until: float) -> None:
        if ids is None:
            await self._call(lambda c: c.execute("UPDATE parked SET leased_until = ?", (until,)))
            return
        rows = [(until, i, until) for i in ids]
        await self._call(
            lambda c: c.executemany(
                "UPDATE parked SET leased_until = ? WHERE id = ? AND (? = 0 OR leased_until > 0)",
                rows,
            )
        )

    async def parked_list(self, limit: int = 100) -> list[ParkedRun]:
        rows = await self._call(
            lambda c: c.execute(
                "SELECT record FROM parked ORDER BY due_at LIMIT ?", (limit,)
            ).fetchall()
        )
        return [parked_from_dict(_load(r[0])) for r in rows]

    # ------------------------------------------------------------------ durable steps

    async def step_get(self, event_id: str, handler: str, step: str) -> tuple[bool, Any]:
        row = await self._call(
            lambda c: c.execute(
                "SELECT result FROM steps WHERE event_id = ? AND handler = ? AND step = ?",
                (event_id, handler, step),
            ).fetchone()
        )
        return (False, None) if row is None else (True, _load(row[0]))

    async def step_put(self, event_id: str, handler: str, step: str, result: Any) -> None:
        row = (event_id, handler, step, _dump(result), time.time())
        await self._call(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO steps (event_id, handler, step, result, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                row,
            )
        )

    # ------------------------------------------------------------------ joins

    async def join_open(self, join: Join) -> bool:
        row = (
            join.id,
            join.handler,
            join.status,
            join.expected,
            join.deadline,
            _dump(join.start),
            join.created_at,
        )
        count: int = await self._call(
            lambda c: (
                c.execute(
                    "INSERT OR IGNORE INTO joins"
                    " (id, handler, status, expected, deadline, start, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                ).rowcount
            )
        )
        return bool(count)

    async def join_get(self, join_id: str) -> Join | None:
        return await self._call(lambda c: _read_join(c, join_id))

    async def join_open_list(self, handler: str) -> list[Join]:
        rows = await self._call(
            lambda c: c.execute(
                f"SELECT {_JOIN_COLUMNS} FROM joins WHERE handler = ? AND status = 'open'"
                " ORDER BY created_at",
                (handler,),
            ).fetchall()
        )
        return [_join(r) for r in rows]

    async def join_add(self, join_id: str, member_id: str, value: Any) -> Join | None:
        def add(conn: sqlite3.Connection) -> Join | None:
            if conn.execute("SELECT 1 FROM joins WHERE id = ?", (join_id,)).fetchone() is None:
                return None
            conn.execute(
                "INSERT OR IGNORE INTO join_members (join_id, member_id, value) VALUES (?, ?, ?)",
                (join_id, member_id, _dump(value)),
            )
            return _read_join(conn, join_id)

        return await self._call(add)

    async def join_close(self, join_id: str, status: JoinStatus, entry: InboxEntry | None) -> bool:
        def close(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE joins SET status = ?, closed_at = ? WHERE id = ? AND status = 'open'",
                (status, time.time(), join_id),
            )
            if not cur.rowcount:
                return False
            if entry is not None:
                _inbox_insert(conn, [entry])
            return True

        return await self._call(close)

    async def join_due(self, now: float, limit: int) -> list[Join]:
        def read(conn: sqlite3.Connection) -> list[Join]:
            ids = conn.execute(
                "SELECT id FROM joins WHERE status = 'open' AND deadline <= ?"
                " ORDER BY deadline LIMIT ?",
                (now, limit),
            ).fetchall()
            return [j for (i,) in ids if (j := _read_join(conn, i)) is not None]

        return await self._call(read)

    async def join_buffer_add(
        self, handler: str, event_id: str, event: dict[str, Any], expires_at: float
    ) -> None:
        row = (handler, event_id, _dump(event), expires_at)
        await self._call(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO join_buffer (handler, event_id, event, expires_at)"
                " VALUES (?, ?, ?, ?)",
                row,
            )
        )

    async def join_buffered(self, handler: str, now: float) -> list[dict[str, Any]]:
        rows = await self._call(
            lambda c: c.execute(
                "SELECT event FROM join_buffer WHERE handler = ? AND expires_at > ? ORDER BY rowid",
                (handler, now),
            ).fetchall()
        )
        return [_load(r[0]) for r in rows]

    async def join_buffer_remove(self, handler: str, event_ids: Iterable[str]) -> None:
        rows = [(handler, i) for i in event_ids]
        await self._call(
            lambda c: c.executemany(
                "DELETE FROM join_buffer WHERE handler = ? AND event_id = ?", rows
            )
        )

    async def join_purge(self, now: float, closed_before: float) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            count = conn.execute("DELETE FROM join_buffer WHERE expires_at <= ?", (now,)).rowcount
            conn.execute(
                "DELETE FROM join_members WHERE join_id IN (SELECT id FROM joins"
                " WHERE status != 'open' AND closed_at < ?)",
                (closed_before,),
            )
            count += conn.execute(
                "DELETE FROM joins WHERE status != 'open' AND closed_at < ?", (closed_before,)
            ).rowcount
            return int(count)

        return await self._call(purge)

    # ------------------------------------------------------------------ cron

    async def cron_last(self, name: str) -> float | None:
        row = await self._call(
            lambda c: c.execute("SELECT last_tick FROM cron WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else float(row[0])

    async def cron_advance(self, name: str, tick: float) -> bool:
        count: int = await self._call(
            lambda c: (
                c.execute(
                    "INSERT INTO cron (name, last_tick) VALUES (?, ?) ON CONFLICT (name)"
                    " DO UPDATE SET last_tick = excluded.last_tick"
                    " WHERE cron.last_tick < excluded.last_tick",
                    (name, tick),
                ).rowcount
            )
        )
        return bool(count)

    # ------------------------------------------------------------------ run history

    async def history_put(self, events: Sequence[EventRecord], runs: Sequence[RunRecord]) -> None:
        event_rows = [
            (e.id, e.type, e.status, e.received_at, e.correlation_id, e.parent_id, _dump(asdict(e)))
            for e in events
        ]
        run_rows = [(r.event_id, r.handler, _dump(asdict(r))) for r in runs]

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO history_events"
                " (id, type, status, received_at, correlation_id, parent_id, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                event_rows,
            )
            conn.executemany(
                "INSERT OR REPLACE INTO history_runs (event_id, handler, record) VALUES (?, ?, ?)",
                run_rows,
            )

        await self._call(write)

    async def history_events(
        self,
        *,
        type: str | None = None,
        status: str | None = None,
        search: str | None = None,
        before: float | None = None,
        limit: int = 50,
    ) -> list[EventRecord]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("type", type), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if search is not None:
            clauses.append("(id = ? OR correlation_id = ?)")
            args += [search, search]
        if before is not None:
            clauses.append("received_at < ?")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT record FROM history_events {where} ORDER BY received_at DESC, id DESC LIMIT ?"
        )
        rows = await self._call(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [event_record_from_dict(_load(r[0])) for r in rows]

    async def history_event(self, event_id: str) -> EventRecord | None:
        row = await self._call(
            lambda c: c.execute(
                "SELECT record FROM history_events WHERE id = ?", (event_id,)
            ).fetchone()
        )
        return None if row is None else event_record_from_dict(_load(row[0]))

    async def history_runs(self, event_id: str) -> list[RunRecord]:
        rows = await self._call(
            lambda c: c.execute(
                "SELECT record FROM history_runs WHERE event_id = ? ORDER BY handler", (event_id,)
            ).fetchall()
        )
        return [run_from_dict(_load(r[0])) for r in rows]

    async def history_children(self, event_id: str) -> list[EventRecord]:
        rows = await self._call(
            lambda c: c.execute(
                "SELECT record FROM history_events WHERE parent_id = ? ORDER BY received_at, id",
                (event_id,),
            ).fetchall()
        )
        return [event_record_from_dict(_load(r[0])) for r in rows]

    async def history_purge(self, older_than: float, keep: int) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_ids (id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM purge_ids")
            conn.execute(
                "INSERT INTO purge_ids SELECT id FROM history_events WHERE received_at < ?",
                (older_than,),
            )
            conn.execute(
                "INSERT OR IGNORE INTO purge_ids SELECT id FROM history_events"
                " ORDER BY received_at DESC, id DESC LIMIT -1 OFFSET ?",
                (keep,),
            )
            conn.execute("DELETE FROM history_runs WHERE event_id IN (SELECT id FROM purge_ids)")
            return int(
                conn.execute(
                    "DELETE FROM history_events WHERE id IN (SELECT id FROM purge_ids)"
                ).rowcount
            )

        return await self._call(purge)


_JOIN_COLUMNS = "id, handler, start, expected, deadline, status, created_at"


def _join(row: Any) -> Join:
    return Join(
        id=row[0],
        handler=row[1],
        start=_load(row[2]),
        expected=row[3],
        deadline=row[4],
        status=row[5],
        created_at=row[6],
    )


def _read_join(conn: sqlite3.Connection, join_id: str) -> Join | None:
    row = conn.execute(f"SELECT {_JOIN_COLUMNS} FROM joins WHERE id = ?", (join_id,)).fetchone()
    if row is None:
        return None
    join = _join(row)
    members = conn.execute(
        "SELECT member_id, value FROM join_members WHERE join_id = ? ORDER BY rowid", (join_id,)
    ).fetchall()
    join.members = {m: _load(v) for m, v in members}
    return join


def _entry(row: Any) -> InboxEntry:
    """An inbox entry from ``seq, id, source, handler, body, created_at``."""
    return InboxEntry(
        id=row[1], body=bytes(row[4]), source=row[2], handler=row[3], created_at=row[5], seq=row[0]
    )


def _inbox_insert(conn: sqlite3.Connection, entries: Sequence[InboxEntry]) -> list[bool]:
    out = []
    for e in entries:
        cur = conn.execute(
            "INSERT OR IGNORE INTO inbox (id, source, handler, body, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (e.id, e.source, e.handler, e.body, e.created_at),
        )
        if cur.rowcount:
            e.seq = cur.lastrowid or 0
        out.append(bool(cur.rowcount))
    return out


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _dump(value: Any) -> bytes | None:
    if value is None:
        return None
    return orjson.dumps(value, default=str)


def _load(raw: bytes | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def _letter(record: bytes, status: str) -> DeadLetter:
    letter = DeadLetter.from_dict(orjson.loads(record))
    letter.status = status  # type: ignore[assignment]
    return letter
