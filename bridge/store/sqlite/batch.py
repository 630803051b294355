"""The ledger's batched calls on SQLite.

Lookups ("already final?") never wait behind writes and cost no thread hand-off: the
lookups made in one turn of the event loop are answered in the next, together, on a
read connection of their own (WAL: readers see every committed write, and never wait
for the writer), on the loop's thread (an indexed lookup per key, tens of µs). A
lookup that finds the database busy (rare in WAL), and every lookup of an in-memory
database (a second connection would be another database), goes to the store's thread
instead, in a lane of its own with up to 4 batches in flight.

The successes and dead letters of a batch are written in one transaction, and each
caller is answered once it committed. They too are written on the loop's thread, on a
write connection of their own that never waits for a lock (``busy_timeout`` 0): a batch
that finds the database busy (the store's thread writing the inbox, a dead letter, the
history) goes to the store's thread instead, which waits its deadline. Handing each
batch to the thread cost more than the write: measured on the ledger benchmark (4
handlers an event, SQLite), the event loop's thread spent 8 µs an event more with the
thread writing, in waits for the GIL and their system calls, than writing itself. The
write connection never checkpoints (a checkpoint syncs the files to disk, which must
not hold the loop); every ``_CHECKPOINT_ROWS`` rows it wrote, the store's thread
checkpoints in two steps. A passive checkpoint first copies the WAL into the database
and syncs it while the loop goes on writing (in WAL mode a checkpoint and a writer run
side by side); then one that restarts the WAL, as SQLite's automatic checkpoint would
have (a passive one alone, racing the loop's next writes, would never let the WAL start
afresh), with only the writes made meanwhile left to copy. Only during that second step
do the batches go to the store's thread (a loop writing without pause would otherwise
keep taking the write lock before it). With the restarting checkpoint alone, the loop's
writes went to the thread for the whole copy and sync: 13 ms a checkpoint on the
webhook benchmark, a tenth of its time, in which requests waited for their inbox
commit and the loop idled.

The inbox's puts and done marks take the same write connection, and its reads of
pending entries the same read connection (``_write``, ``_read``; the store's thread when
busy): a webhook's request and its delivery then make no hand-off to the thread at all.

A delivery's lookup after another's record of the same key sees it: the fan-out holds a
key in its single-flight map until the record's commit is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from bridge.errors import StoreError
from bridge.store.batching import Call, Lane, count_round_trip
from bridge.store.contracts import DeadLetter, LedgerEntry
from bridge.store.sqlite.connection import STATEMENT_JOURNAL, SqliteConnection, in_lists
from bridge.store.sqlite.dead_letters import letter_insert
from bridge.store.sqlite.ledger import ledger_insert, one_statement

_FINAL = "SELECT key, handler, status FROM ledger WHERE key IN ({marks})"
_CHECKPOINT_ROWS = 4096  # rows written on the loop's thread between two checkpoints

Pair = tuple[str, str]
R = TypeVar("R")
log = logging.getLogger("bridge.store")


class _Busy(Exception):
    """The read connection could not read now: the lookup goes to the store's thread."""


class SqliteBatches(SqliteConnection):
    """``ledger_final``, ``ledger_record`` and ``dead_letter_final`` in batches across callers."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        # Two lanes, so a lookup (which a delivery's handlers wait for) never waits
        # behind a batch of writes (which only its settlement waits for).
        self._reads = Lane(self._flush, self.deadlines.call, flights=4)
        self._writes = Lane(self._flush, self.deadlines.call)
        self._reader: sqlite3.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._asked: list[tuple[Sequence[Pair], asyncio.Future[dict[Pair, str]]]] = []
        self._unchecked = 0  # rows the write connection wrote since the last checkpoint
        self._checkpoint: asyncio.Task[None] | None = None
        self._restarting = False  # the checkpoint's second step: writes go to the thread

    async def open(self) -> None:
        await super().open()
        if self._reader is None and self.path != ":memory:":
            try:
                self._reader = _open_reader(self.path)
            except sqlite3.Error:
                self._reader = None  # lookups go to the store's thread, as writes do
            try:
                self._writer = _open_writer(self.path)
            except sqlite3.Error:
                self._writer = None  # writes go to the store's thread

    async def ledger_final(self, keys: Sequence[Pair]) -> dict[Pair, str]:
        if not keys:
            return {}
        if self._reader is not None:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[dict[Pair, str]] = loop.create_future()
            if not self._asked:
                loop.call_soon(self._look)
            self._asked.append((keys, future))
            try:
                return await future
            except _Busy:
                pass
        found: dict[Pair, str] = await self._reads.call("final", keys)
        return found

    def _look(self) -> None:
        """Answer the lookups asked since the last turn in one read (or send them to the
        store's thread, by ``_Busy``, if the read connection cannot read now)."""
        asked, self._asked = self._asked, []
        reader = self._reader
        status: dict[Pair, str] | None = None
        error: BaseException = StoreError("the store is not open")
        if reader is not None:
            count_round_trip(self, "ledger_read")
            try:
                status = _final(reader, [keys for keys, _ in asked])
            except sqlite3.Error:
                error = _Busy()
        for keys, future in asked:
            if future.done():
                continue  # its caller was cancelled
            if status is None:
                future.set_exception(error)
            elif not status:  # none of the turn's keys is final: most lookups
                future.set_result({})
            else:
                future.set_result({k: status[k] for k in keys if k in status})

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        if entries:
            await self._writes.call("record", entries)

    async def dead_letter_final(self, letter: DeadLetter, entry: LedgerEntry | None) -> None:
        await self._writes.call("dead_letter", letter, entry)

    async def close(self) -> None:
        await self._reads.idle()
        await self._writes.idle()
        if self._checkpoint is not None:
            await asyncio.wait((self._checkpoint,))
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.close()
        self._reader = self._writer = None
        await super().close()

    async def _flush(self, calls: list[Call]) -> None:
        answers = None
        if calls[0].kind != "final":  # writes: on the loop's write connection if it can
            rows = sum(len(c.args[0]) if c.kind == "record" else 1 for c in calls)
            try:
                written = self._here(lambda conn: _run(conn, calls), rows, "ledger_batch")
            except sqlite3.Error as exc:  # the batch as a whole: each caller is told
                raise StoreError(f"sqlite: {exc}") from exc
            if written is not _BUSY:
                answers = written
        if answers is None:  # a lookup, no write connection, a checkpoint, or busy
            # One caller's successes that fit one statement: no transaction around it. Its
            # failure fails that caller only, as in a transaction (``_run``'s retry of each
            # call alone would fail it again).
            single = (
                len(calls) == 1 and calls[0].kind == "record" and one_statement(calls[0].args[0])
            )
            answers = await self._call(
                lambda conn: _run(conn, calls), operation="ledger_batch", single=single
            )
        for call, (value, error) in zip(calls, answers, strict=True):
            if error is None:
                call.answer(value)
            else:
                call.fail(error)

    async def _write(
        self, fn: Callable[[sqlite3.Connection], R], rows: int, operation: str, single: bool = False
    ) -> R:
        """The inbox's writes, as the ledger's: on the loop's write connection, in a
        transaction of its own, unless the database is busy or the store's thread
        checkpoints (then on that thread, as ``SqliteConnection._write``)."""
        try:
            value = self._here(fn, rows, operation)
        except Exception as exc:  # nothing of it was written: as the thread answers
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        if value is not _BUSY:
            return value
        return await super()._write(fn, rows, operation, single)

    def _here(self, fn: Callable[[sqlite3.Connection], R], rows: int, operation: str) -> R:
        """Run the write ``fn`` (of ``rows`` rows) on the loop's write connection, in a
        transaction of its own, counted as a round trip of ``operation``; ``_BUSY`` if it
        cannot now: no write connection, a checkpoint restarting the WAL (it needs the
        write lock, which a loop that writes without pause would keep taking first), or a busy
        database. What ``fn`` raises is rolled back and raised."""
        writer = self._writer
        if writer is None or self._restarting:
            return cast(R, _BUSY)
        value = _in_transaction(writer, fn)
        if value is not _BUSY:
            count_round_trip(self, operation)
            self._wrote(rows)
        return value

    async def _read(self, fn: Callable[[sqlite3.Connection], R], operation: str) -> R:
        """The inbox's reads, as the ledger's lookups: on the loop's read connection (it
        never waits for the writer), unless it cannot read now."""
        reader = self._reader
        if reader is not None:
            try:
                value = fn(reader)
            except sqlite3.OperationalError:  # busy: the store's thread waits its deadline
                pass
            except Exception as exc:
                raise StoreError(f"{type(exc).__name__}: {exc}") from exc
            else:
                count_round_trip(self, operation)
                return value
        return await super()._read(fn, operation)

    def _wrote(self, rows: int) -> None:
        """Count the rows written on the loop's thread; past ``_CHECKPOINT_ROWS``, the
        store's thread checkpoints (one checkpoint at a time)."""
        self._unchecked += rows
        if self._unchecked >= _CHECKPOINT_ROWS and self._checkpoint is None:
            self._unchecked = 0
            self._checkpoint = asyncio.get_running_loop().create_task(
                self._checkpointed(), name="sqlite checkpoint"
            )

    async def _checkpointed(self) -> None:
        done = False
        try:
            # The copy and sync while the loop writes on; then the restart, which waits for
            # no loop write (they go to the thread meanwhile).
            await self._call(_copy, operation="checkpoint_copy", single=True)
            self._restarting = True
            done = await self._call(_checkpoint, operation="checkpoint", single=True)
        except StoreError as exc:  # the next one copies what this one did not
            log.warning("sqlite checkpoint failed", extra={"error": str(exc)})
        finally:
            self._restarting = False
            self._checkpoint = None
            if not done:  # the next write asks again
                self._unchecked = max(self._unchecked, _CHECKPOINT_ROWS)


_BUSY: Any = object()
"""``_in_transaction``'s answer when the database was busy: nothing was run."""


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], R]) -> R:
    """Run ``fn`` on the loop's write connection, in a transaction of its own; its value,
    or ``_BUSY`` if the database was busy (nothing run). What ``fn`` raises is rolled
    back and raised."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error:  # busy (or worse): the store's thread waits, and tells
        return cast(R, _BUSY)
    try:
        value = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return value


def _copy(conn: sqlite3.Connection) -> None:
    """Copy what the WAL holds into the database and sync it, without waiting for the
    loop's writer (``PASSIVE``: what it writes meanwhile is left for ``_checkpoint``)."""
    if not conn.in_transaction:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()


def _checkpoint(conn: sqlite3.Connection) -> bool:
    """Copy the WAL into the database and have the next writer start the WAL afresh
    (``RESTART``: it waits, up to the thread's busy timeout, for the loop's writer to end
    its transaction; the loop's writes come to this thread until it is done); False if
    it could not run now (in a batch's transaction) or not to the end."""
    if conn.in_transaction:
        return False
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    return not busy


def _run(conn: sqlite3.Connection, calls: list[Call]) -> list[tuple[Any, BaseException | None]]:
    """Run a batch inside the caller's transaction (the store's thread's, or the loop's
    write connection's): writes first, so a lookup in the same batch sees them; each
    call's answer or error."""
    answers: list[tuple[Any, BaseException | None]] = [(None, None)] * len(calls)
    writes = [i for i, c in enumerate(calls) if c.kind == "record"]
    if writes:
        entries = [e for i in writes for e in calls[i].args[0]]
        # One statement fails as a whole (its values are encoded before it runs): no
        # savepoint, two statements fewer, each of which gives up and retakes the GIL.
        alone = one_statement(entries)
        if not alone:
            conn.execute("SAVEPOINT batch")
        try:
            ledger_insert(conn, entries)
            if not alone:
                conn.execute("RELEASE batch")
        except Exception:
            if alone:
                if not conn.in_transaction:
                    raise  # the error ended the transaction: the batch fails as a whole
            else:
                conn.execute("ROLLBACK TO batch")
                conn.execute("RELEASE batch")
            # One bad entry must not fail the others: each on its own.
            for i in writes:
                answers[i] = _alone(conn, lambda i=i: ledger_insert(conn, calls[i].args[0]))
    for i, call in enumerate(calls):
        if call.kind == "dead_letter":
            letter, entry = call.args
            answers[i] = _alone(conn, lambda letter=letter, entry=entry: _dead(conn, letter, entry))
    reads = [i for i, c in enumerate(calls) if c.kind == "final"]
    if reads:
        status = _final(conn, [calls[i].args[0] for i in reads])
        for i in reads:
            answers[i] = ({k: status[k] for k in calls[i].args[0] if k in status}, None)
    return answers


def _open_writer(path: str) -> sqlite3.Connection:
    """A connection to ``path`` for ledger writes on the loop's thread: it never waits for
    a lock (``busy_timeout`` 0: a busy database sends the batch to the store's thread),
    never checkpoints (``_checkpoint`` runs on the store's thread) and keeps its
    statement journals in memory (``STATEMENT_JOURNAL``)."""
    return _open_for_loop(
        path, "busy_timeout=0", "wal_autocheckpoint=0", "synchronous=NORMAL", STATEMENT_JOURNAL
    )


def _open_reader(path: str) -> sqlite3.Connection:
    """A read-only connection to ``path`` for lookups on the loop's thread: it never waits
    for a lock (``busy_timeout`` 0: a busy database sends the lookup to the store's thread,
    which waits its deadline), so it cannot hold up the loop."""
    return _open_for_loop(path, "query_only=1", "busy_timeout=0")


def _open_for_loop(path: str, *pragmas: str) -> sqlite3.Connection:
    """A connection to ``path`` with ``pragmas`` set, for the loop's thread; the database
    must be in WAL mode, where readers and the writer do not wait for each other."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in pragmas:
            conn.execute(f"PRAGMA {pragma}")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            raise sqlite3.OperationalError("not in WAL mode: the loop's thread would wait")
    except BaseException:
        conn.close()
        raise
    return conn


def _final(conn: sqlite3.Connection, lookups: Sequence[Sequence[Pair]]) -> dict[Pair, str]:
    """The statuses found in the ledger of the (handler, key) pairs of ``lookups`` (each
    lookup's pairs): ``key IN (...)`` (``in_lists``), planned as one descent of the
    primary key (key, handler) per key, which finds the rows of every handler of that
    key side by side (an event's handlers share its key unless a handler has a key
    template of its own); rows of handlers not asked for are passed over."""
    status: dict[Pair, str] = {}
    rows = []
    for sql, keys in in_lists(_FINAL, list({key for pairs in lookups for _, key in pairs})):
        cursor = conn.execute(sql, keys)
        rows.extend(cursor.fetchall())
        cursor.close()
    if rows:  # most lookups find nothing: the pairs asked are gathered only for a find
        wanted = {pair for pairs in lookups for pair in pairs}
        for key, handler, found in rows:
            if (handler, key) in wanted:
                status[(handler, key)] = found
    return status


def _dead(conn: sqlite3.Connection, letter: DeadLetter, entry: LedgerEntry | None) -> None:
    letter_insert(conn, letter)
    if entry is not None:
        ledger_insert(conn, [entry])


def _alone(conn: sqlite3.Connection, write: Any) -> tuple[Any, BaseException | None]:
    """``write()`` in a savepoint of its own: its error, rolled back, fails only its call."""
    conn.execute("SAVEPOINT one")
    try:
        write()
    except Exception as exc:
        conn.execute("ROLLBACK TO one")
        conn.execute("RELEASE one")
        return None, StoreError(f"{type(exc).__name__}: {exc}")
    conn.execute("RELEASE one")
    return None, None
