"""The SQLite connection: one thread of its own, operations run in batches (group commit).

Operations queue up for the thread, which runs them in batches of up to ``_BATCH``,
one transaction per batch: under load, hundreds of ledger writes share one commit.
Each operation runs in a savepoint, so one that fails does not sink its batch.

Every call has a deadline (``bridge.store.deadlines``: the URL's ``timeout``, default
5 s, also SQLite's ``busy_timeout``; ``ping_timeout`` for the ping, default 2 s): a
call whose answer does not come back from the thread in time raises ``StoreError``,
and is skipped if the thread has not started it yet.

One process writes a database file at a time: ``exclusive()`` makes ``open`` take an
``fcntl.flock`` on ``<db>.lock`` next to it (the holder's pid, host and command line
written inside) and keep it until ``close`` or the process's end, so a second
``bridge run`` on the same file refuses to start instead of sharing it silently. A lock
file left by a process that died does not block: the kernel drops its lock with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import socket
import sqlite3
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from bridge.errors import StoreError
from bridge.store.batching import count_round_trip
from bridge.store.deadlines import Deadlines, take_deadlines
from bridge.store.sqlite.migrations import LEGACY_KEYS, migrate
from bridge.threads import nudge

STATEMENT_JOURNAL = "temp_store=MEMORY"
"""The pragma that keeps statement journals (and SQLite's other temporary files) in
memory. A statement that writes many rows inside a transaction keeps each page it
changes, as it was, in a statement journal, to undo that statement alone if it fails;
past 64 KiB (16 pages) SQLite spills the journal to a temporary file, which it creates,
writes and closes for that one statement. Rows with random keys (the ids of webhook
providers and CloudEvents producers) change a page each, so a batch of 16 or more of them
spilled: with the journal in memory, SQLite's work for a ledger of 4 handlers an event
with random keys took 27-31 % less CPU, and the webhook benchmark's server (where one
request in 30 had spilled) 7-29 µs less a request. What it keeps in memory is bounded: a
journal holds the pages of one of the bridge's statements (500 rows at most), and its
one temporary table, the history purge's ids, a second's worth of events. Set on the
connections that write, after the migrations, whose statements copy whole tables."""

R = TypeVar("R")
_BATCH = 512
IN_LIST = 512
"""Values per ``in_lists`` statement: well under SQLite's limit of bound variables."""
_IN_LISTS: dict[tuple[str, int], str] = {}


def in_lists(sql: str, values: Sequence[Any]) -> Iterator[tuple[str, list[Any]]]:
    """``sql``, whose ``{marks}`` is an ``IN`` list, for every ``IN_LIST`` of ``values``:
    (the statement, its values). Each list is padded to a power of two (its last value
    again, which ``IN`` ignores), so a few prepared statements serve every size."""
    for start in range(0, len(values), IN_LIST):
        part = list(values[start : start + IN_LIST])
        size = 1 << (len(part) - 1).bit_length()
        part.extend([part[-1]] * (size - len(part)))
        text = _IN_LISTS.get((sql, size))
        if text is None:
            text = _IN_LISTS[(sql, size)] = sql.format(marks=",".join("?" * size))
        yield text, part


def sqlite_path(url: str) -> str:
    """``sqlite:///rel/path.db`` -> ``rel/path.db``; ``sqlite:////abs.db`` -> ``/abs.db``
    (a ``?query`` of deadlines left out)."""
    if not url.startswith("sqlite://"):
        raise StoreError(f"not a sqlite URL: {url!r}")
    rest = url[len("sqlite://") :].partition("?")[0]
    if rest.startswith("/"):
        rest = rest[1:]
    return rest or ":memory:"


def sqlite_deadlines(url: str) -> Deadlines:
    """The deadlines in a SQLite URL's query (``?timeout=5&ping_timeout=2``)."""
    return take_deadlines(dict(parse_qsl(url.partition("?")[2])))


class WriterLock:
    """An exclusive ``flock`` on ``<database>.lock``, naming its holder inside.

    The file is never deleted (deleting a lock file races with the next taker); a
    stale file is harmless, as only a live process holds a ``flock``.
    """

    def __init__(self, database: str) -> None:
        self.path = f"{database}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting.

        Raises:
            StoreError: another process holds it (its pid, host and command line in
                the message), or the lock file cannot be opened.
        """
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            database = self.path.removesuffix(".lock")
            raise StoreError(
                f"{database} is in use by another bridge ({holder or 'pid unknown'}); "
                "one process writes a SQLite store at a time: stop that one, or give this "
                "one a store of its own (--store)"
            ) from None
        command = " ".join(sys.argv)[:200]
        holder = f"pid {os.getpid()} on {socket.gethostname()}: {command}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (and the holder's line). Idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class _Op:
    __slots__ = ("abandoned", "fn", "future", "loop", "single")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop,
        single: bool = False,
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.single = single
        """``fn`` runs one statement: atomic by itself, it needs no transaction around it."""
        self.future: asyncio.Future[Any] = loop.create_future()
        self.abandoned = False
        """Set when the caller stopped waiting: the thread skips it if not yet started."""


class SqliteConnection:
    """Opens the database (applying migrations), runs operations on its thread, closes.

    The concern classes of the SQLite store build on this: each runs its queries
    through ``_call``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.shared = False
        self.legacy_keys = True  # until open() read the store's own
        self.path = sqlite_path(url)
        self.deadlines = sqlite_deadlines(url)
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock: WriterLock | None = None
        self.round_trips: Counter[str] = Counter()
        """Hand-offs to the store's thread so far, by operation (the calling method)."""
        self.metrics: Any = None
        """A ``bridge.metrics.Metrics`` to count them in as well (set by the assembly)."""

    def exclusive(self) -> None:
        """Make ``open`` take the database's writer lock and ``close`` release it: for
        the process that runs the bridge. Tools that open the store briefly (``bridge
        dlq``) do not call this, so they still work beside a running bridge."""
        if self.path != ":memory:":
            self._lock = WriterLock(self.path)

    async def open(self) -> None:
        """Start the thread, connect and migrate.

        Raises:
            StoreError: the database cannot be opened or migrated, or (after
                ``exclusive()``) another process holds its writer lock.
        """
        if self._thread is not None:
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        if self._lock is not None:
            self._lock.acquire()
        ready: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="sqlite-store", daemon=True
        )
        self._thread.start()
        error = await asyncio.get_running_loop().run_in_executor(None, ready.get)
        if error is not None:
            self._thread = None
            if self._lock is not None:
                self._lock.release()
            raise StoreError(f"cannot open {self.path}: {error}") from error

    async def close(self) -> None:
        """Run what is queued, then close the connection. Idempotent."""
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        if self._lock is not None:
            self._lock.release()

    async def ping(self) -> bool:
        """True when the database answers within the ping deadline."""
        try:
            await self._call(lambda c: c.execute("SELECT 1").fetchone(), self.deadlines.ping)
        except StoreError:
            return False
        return True

    async def _call(
        self,
        fn: Callable[[sqlite3.Connection], R],
        deadline: float = 0.0,
        operation: str = "",
        single: bool = False,
    ) -> R:
        """Run ``fn`` on the thread; its result within ``deadline`` (default: the call
        deadline), else ``StoreError``. Counted as one round trip of ``operation`` (default:
        the calling method's name). ``single``: ``fn`` runs one statement (see ``_Op``)."""
        if self._thread is None or self._closed:
            raise StoreError("the store is not open")
        # The caller's name labels the count, so no call site has to name itself.
        count_round_trip(self, operation or sys._getframe(1).f_code.co_name)
        loop = asyncio.get_running_loop()
        op = _Op(fn, loop, single)
        self._queue.put(op)
        nudge()  # the store's thread runs it now, not when the loop next idles
        seconds = deadline or self.deadlines.call
        # A timer rather than wait_for: no task per call on the hot path.
        timer = loop.call_later(seconds, _expire, op, seconds)
        try:
            result: R = await op.future
        finally:
            timer.cancel()
        return result

    async def _write(
        self, fn: Callable[[sqlite3.Connection], R], rows: int, operation: str, single: bool = False
    ) -> R:
        """Run the write ``fn`` (of about ``rows`` rows) in a transaction of its own: on the
        store's thread here; ``SqliteBatches`` runs it on the event loop's own write
        connection when it can. ``operation`` labels its round trip; ``single`` as ``_call``.

        Raises:
            StoreError: it failed (nothing of it was written), or no answer in time.
        """
        return await self._call(fn, operation=operation, single=single)

    async def _read(self, fn: Callable[[sqlite3.Connection], R], operation: str) -> R:
        """Run the read ``fn``: on the store's thread here; ``SqliteBatches`` runs it on the
        event loop's own read connection when it can."""
        return await self._call(fn, operation=operation, single=True)

    def _serve(self, ready: queue.SimpleQueue[BaseException | None]) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={max(1, round(self.deadlines.call * 1000))}")
            migrate(conn)
            conn.execute(f"PRAGMA {STATEMENT_JOURNAL}")
            self.legacy_keys = conn.execute(LEGACY_KEYS).fetchone() is not None
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
                # A call whose caller stopped waiting was answered StoreError: not run.
                batch = [o for o in batch if not o.abandoned]
                if batch:
                    self._run_batch(conn, batch)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        results: list[tuple[_Op, Any, BaseException | None]] = []
        if len(batch) == 1 and batch[0].single:
            # One statement alone (the common case below saturation): SQLite commits it
            # as it ends, all or nothing. A BEGIN and a COMMIT around it would be two
            # statements more, each of which gives up and takes back the GIL.
            op = batch[0]
            value: Any = None
            failed: StoreError | None = None
            try:
                value = _value(op.fn(conn))
            except Exception as exc:
                failed = StoreError(f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:  # not for one statement; as a safeguard
                        conn.execute("ROLLBACK")
            op.loop.call_soon_threadsafe(_resolve, op.future, value, failed)
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:
                # Alone in its transaction (the common case below saturation): no
                # savepoint, as rolling the transaction back undoes the same. Each
                # statement gives up and takes back the GIL, which the event loop's
                # thread may hold: four fewer per commit.
                op = batch[0]
                try:
                    results.append((op, _value(op.fn(conn)), None))
                except Exception as exc:
                    results.append((op, None, StoreError(f"{type(exc).__name__}: {exc}")))
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                else:
                    conn.execute("COMMIT")
            else:
                results = _at_once(conn, batch) or _each_alone(conn, batch)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StoreError(f"sqlite: {exc}")
            for op in batch:
                op.loop.call_soon_threadsafe(_resolve, op.future, None, failure)
            return
        for op, value, error in results:
            op.loop.call_soon_threadsafe(_resolve, op.future, value, error)


def _at_once(
    conn: sqlite3.Connection, batch: list[_Op]
) -> list[tuple[_Op, Any, BaseException | None]]:
    """Run every operation of ``batch`` and commit; nothing (rolled back, a transaction
    begun again) if one fails. A savepoint around each would cost two more statements,
    each a GIL hand-off, per operation: kept for when one fails (``_each_alone``)."""
    try:
        results: list[tuple[_Op, Any, BaseException | None]] = [
            (op, _value(op.fn(conn)), None) for op in batch
        ]
    except Exception:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("BEGIN IMMEDIATE")
        return []
    conn.execute("COMMIT")
    return results


def _each_alone(
    conn: sqlite3.Connection, batch: list[_Op]
) -> list[tuple[_Op, Any, BaseException | None]]:
    """Run each operation of ``batch`` in a savepoint of its own, so one that fails fails
    alone, and commit."""
    results: list[tuple[_Op, Any, BaseException | None]] = []
    for op in batch:
        conn.execute("SAVEPOINT op")
        try:
            results.append((op, _value(op.fn(conn)), None))
            conn.execute("RELEASE op")
        except Exception as exc:  # one bad operation must not sink the batch or the thread
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            results.append((op, None, StoreError(f"{type(exc).__name__}: {exc}")))
    conn.execute("COMMIT")
    return results


def _value(value: Any) -> Any:
    """An operation's result, fit to leave the store's thread: a cursor must die on this
    thread (finalized on the event loop's thread it resets a cached statement this thread
    may be running: SQLITE_MISUSE, "bad parameter or other API misuse")."""
    if isinstance(value, sqlite3.Cursor):
        value.close()
        return None
    return value


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _expire(op: _Op, seconds: float) -> None:
    """The caller's deadline passed: answer ``StoreError``; the thread skips the call if it
    has not started it (an answer that comes later is dropped)."""
    op.abandoned = True
    if not op.future.done():
        op.future.set_exception(StoreError(f"sqlite: no answer within {seconds:g}s"))
