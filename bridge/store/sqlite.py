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
from pathlib import Path
from typing import Any, TypeVar

import orjson

from bridge.errors import StoreError
from bridge.store.base import DeadLetter, DeadLetterStatus, InboxEntry, LedgerEntry

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
            _dump(letter.to_dict()),
        )
        await self._call(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO dead_letters"
                " (id, created_at, status, reason, connector, handler, event_id, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
    ) -> list[DeadLetter]:
        clauses: list[str] = []
        args: list[str] = []
        if status is not None:
            clauses.append("status = ?")
            args.append(status)
        if handler is not None:
            clauses.append("handler = ?")
            args.append(handler)
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
        def write(conn: sqlite3.Connection) -> list[bool]:
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

        return await self._call(write)

    async def inbox_pending(self, after_seq: int, limit: int) -> list[InboxEntry]:
        rows = await self._call(
            lambda c: c.execute(
                "SELECT seq, id, source, handler, body, created_at FROM inbox"
                " WHERE done_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        )
        return [
            InboxEntry(
                id=r[1], body=bytes(r[4]), source=r[2], handler=r[3], created_at=r[5], seq=r[0]
            )
            for r in rows
        ]

    async def inbox_done(self, seqs: Iterable[int]) -> None:
        now = time.time()
        rows = [(now, s) for s in seqs]
        await self._call(
            lambda c: c.executemany("UPDATE inbox SET done_at = ?, body = NULL WHERE seq = ?", rows)
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
