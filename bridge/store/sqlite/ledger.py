"""The ledger on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import cast

from bridge.store import rows
from bridge.store.contracts import LedgerEntry
from bridge.store.sqlite.connection import SqliteConnection

_COLUMNS = "INSERT INTO ledger (handler, key, event_id, status, result, finished_at) VALUES "
_UPSERT = (
    " ON CONFLICT (key, handler) DO UPDATE SET"
    " status = excluded.status, result = excluded.result,"
    " finished_at = excluded.finished_at, event_id = excluded.event_id"
    " WHERE ledger.status != 'succeeded'"
)
# A run that returned nothing has NULL written in the statement, not bound: the sqlite3
# module binds str, int, float and bytearray directly but looks every other value (None,
# bytes) up in its adapters first, about 0.3 µs a value. A result is bound as bytearray.
_ROW = "(?, ?, ?, ?, ?, ?)"
_ROW_BARE = "(?, ?, ?, ?, NULL, ?)"
_ROWS = 256  # most rows per statement: 1,536 bound variables, well under SQLite's 32,766
_STATEMENTS: dict[tuple[int, bool], str] = {}


def _record(rows: int, bare: bool) -> str:
    """The upsert of ``rows`` rows in one statement, their results NULL if ``bare`` (a
    power of 2: 18 statements at most, which the connection's statement cache keeps
    prepared)."""
    sql = _STATEMENTS.get((rows, bare))
    if sql is None:
        row = _ROW_BARE if bare else _ROW
        sql = _STATEMENTS[(rows, bare)] = _COLUMNS + ",".join([row] * rows) + _UPSERT
    return sql


def one_statement(entries: Sequence[LedgerEntry]) -> bool:
    """Whether ``ledger_insert`` records ``entries`` in one statement (atomic on its own: a
    failed one leaves nothing behind, so it needs no savepoint): a power of 2 of them, up
    to ``_ROWS``, that all returned nothing or all returned something."""
    count = len(entries)
    if count > _ROWS or count & (count - 1) or not count:
        return False
    bare = entries[0].result is None
    return all((e.result is None) is bare for e in entries)


def ledger_insert(conn: sqlite3.Connection, entries: Sequence[LedgerEntry]) -> None:
    """Record final runs inside the caller's transaction; ``succeeded`` is never overwritten.

    A few statements of many rows each (``_ROWS``, then powers of 2; the runs that
    returned nothing apart from those that did, in order: mostly one or the other),
    applied in order (a key that comes twice is upserted twice): one step per statement
    where ``executemany`` takes one per entry, each of which gives up and takes back the
    GIL, so a batch's rows do not each wait for the event loop's thread to let go of it."""
    encode = rows.encode
    count = len(entries)
    at = 0
    while at < count:
        values: list[object] = []
        add = values.extend  # one tuple a row: half the time of a nested comprehension
        end = at
        bare = entries[at].result is None
        if bare:
            while end < count and (e := entries[end]).result is None:
                add((e.handler, e.key, e.event_id, e.status, e.finished_at))
                end += 1
        else:
            while end < count and (e := entries[end]).result is not None:
                result = bytearray(cast(bytes, encode(e.result)))
                add((e.handler, e.key, e.event_id, e.status, result, e.finished_at))
                end += 1
        _insert(conn, values, end - at, 5 if bare else 6, bare)
        at = end


def _insert(
    conn: sqlite3.Connection, values: list[object], left: int, width: int, bare: bool
) -> None:
    """Upsert ``left`` rows of ``width`` values each, in statements of powers of 2."""
    start = 0
    while left:
        size = min(_ROWS, 1 << (left.bit_length() - 1))
        conn.execute(_record(size, bare), values[start : start + width * size]).close()
        start += width * size
        left -= size


class SqliteLedger(SqliteConnection):
    """``Ledger`` on SQLite: final runs by (key, handler) (lookups, records: ``SqliteBatches``)."""

    async def ledger_entries(self, limit: int = 1000) -> list[LedgerEntry]:
        """Recent ledger entries (for tests and the UI)."""

        def read(conn: sqlite3.Connection) -> list[LedgerEntry]:
            found = conn.execute(
                f"SELECT {rows.LEDGER_COLUMNS} FROM ledger ORDER BY finished_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [rows.ledger_entry(r) for r in found]

        return await self._call(read)

    async def ledger_get(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], LedgerEntry]:
        def read(conn: sqlite3.Connection) -> dict[tuple[str, str], LedgerEntry]:
            found = {}
            for handler, key in keys:
                row = conn.execute(
                    f"SELECT {rows.LEDGER_COLUMNS} FROM ledger WHERE handler = ? AND key = ?",
                    (handler, key),
                ).fetchone()
                if row is not None:
                    found[(handler, key)] = rows.ledger_entry(row)
            return found

        return await self._call(read) if keys else {}
