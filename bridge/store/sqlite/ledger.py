"""The ledger on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

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
_ROWS = 256  # most rows per statement: 1,536 bound variables, well under SQLite's 32,766
_STATEMENTS: dict[int, str] = {}


def _record(rows: int) -> str:
    """The upsert of ``rows`` rows in one statement (a power of 2: 9 statements at most,
    which the connection's statement cache keeps prepared)."""
    sql = _STATEMENTS.get(rows)
    if sql is None:
        sql = _STATEMENTS[rows] = _COLUMNS + ",".join(["(?, ?, ?, ?, ?, ?)"] * rows) + _UPSERT
    return sql


def one_statement(entries: int) -> bool:
    """Whether ``ledger_insert`` records ``entries`` entries in one statement (atomic on
    its own: a failed one leaves nothing behind, so it needs no savepoint)."""
    return entries <= _ROWS and entries & (entries - 1) == 0


def ledger_insert(conn: sqlite3.Connection, entries: Sequence[LedgerEntry]) -> None:
    """Record final runs inside the caller's transaction; ``succeeded`` is never overwritten.

    A few statements of many rows each (``_ROWS``, then powers of 2), applied in order (a
    key that comes twice is upserted twice): one step per statement where ``executemany``
    takes one per entry, each of which gives up and takes back the GIL, so a batch's rows
    do not each wait for the event loop's thread to let go of it."""
    values: list[object] = []
    add = values.extend  # one tuple a row: half the time of a nested comprehension
    encode = rows.encode
    for e in entries:
        result = e.result
        if result is not None:  # most runs return nothing
            result = encode(result)
        add((e.handler, e.key, e.event_id, e.status, result, e.finished_at))
    start, left = 0, len(entries)
    while left:
        size = min(_ROWS, 1 << (left.bit_length() - 1))
        conn.execute(_record(size), values[start : start + 6 * size]).close()
        start += 6 * size
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
