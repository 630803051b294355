"""Joins on SQLite."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from bridge.store import rows
from bridge.store.contracts import InboxEntry, Join, JoinStatus
from bridge.store.sqlite.connection import SqliteConnection
from bridge.store.sqlite.inbox import inbox_insert


class SqliteJoins(SqliteConnection):
    """``Joins`` on SQLite: one writer thread makes each operation atomic."""

    async def join_open(self, join: Join) -> bool:
        row = (
            join.id,
            join.handler,
            join.status,
            join.expected,
            join.deadline,
            rows.encode(join.start),
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
        found = await self._call(
            lambda c: c.execute(
                f"SELECT {rows.JOIN_COLUMNS} FROM joins WHERE handler = ? AND status = 'open'"
                " ORDER BY created_at",
                (handler,),
            ).fetchall()
        )
        return [rows.join(r) for r in found]

    async def join_add(self, join_id: str, member_id: str, value: Any) -> Join | None:
        def add(conn: sqlite3.Connection) -> Join | None:
            if conn.execute("SELECT 1 FROM joins WHERE id = ?", (join_id,)).fetchone() is None:
                return None
            conn.execute(
                "INSERT OR IGNORE INTO join_members (join_id, member_id, value) VALUES (?, ?, ?)",
                (join_id, member_id, rows.encode(value)),
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
                inbox_insert(conn, [entry])
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
        row = (handler, event_id, rows.encode(event), expires_at)
        await self._call(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO join_buffer (handler, event_id, event, expires_at)"
                " VALUES (?, ?, ?, ?)",
                row,
            )
        )

    async def join_buffered(self, handler: str, now: float) -> list[dict[str, Any]]:
        found = await self._call(
            lambda c: c.execute(
                "SELECT event FROM join_buffer WHERE handler = ? AND expires_at > ? ORDER BY rowid",
                (handler, now),
            ).fetchall()
        )
        return [rows.decode(r[0]) for r in found]

    async def join_buffer_remove(self, handler: str, event_ids: Iterable[str]) -> None:
        params = [(handler, i) for i in event_ids]
        await self._call(
            lambda c: c.executemany(
                "DELETE FROM join_buffer WHERE handler = ? AND event_id = ?", params
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


def _read_join(conn: sqlite3.Connection, join_id: str) -> Join | None:
    row = conn.execute(f"SELECT {rows.JOIN_COLUMNS} FROM joins WHERE id = ?", (join_id,)).fetchone()
    if row is None:
        return None
    join = rows.join(row)
    members = conn.execute(
        "SELECT member_id, value FROM join_members WHERE join_id = ? ORDER BY rowid", (join_id,)
    ).fetchall()
    join.members = {m: rows.decode(v) for m, v in members}
    return join
