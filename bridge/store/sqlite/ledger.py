"""The ledger on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from bridge.store import rows
from bridge.store.contracts import LedgerEntry
from bridge.store.sqlite.connection import SqliteConnection

_RECORD = (
    "INSERT INTO ledger (handler, key, event_id, status, result, finished_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (handler, key) DO UPDATE SET"
    " status = excluded.status, result = excluded.result,"
    " finished_at = excluded.finished_at, event_id = excluded.event_id"
    " WHERE ledger.status != 'succeeded'"
)


def ledger_insert(conn: sqlite3.Connection, entries: Sequence[LedgerEntry]) -> None:
    """Record final runs inside the caller's transaction; ``succeeded`` is never overwritten."""
    conn.executemany(
        _RECORD,
        [
            (e.handler, e.key, e.event_id, e.status, rows.encode(e.result), e.finished_at)
            for e in entries
        ],
    ).close()


class SqliteLedger(SqliteConnection):
    """``Ledger`` on SQLite: final runs by (handler, key) (lookups, records: ``SqliteBatches``)."""

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
