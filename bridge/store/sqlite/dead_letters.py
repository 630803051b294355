"""Dead letters on SQLite."""

from __future__ import annotations

import sqlite3

from bridge.store import rows
from bridge.store.contracts import DeadLetter, DeadLetterStatus
from bridge.store.sqlite.connection import SqliteConnection


class SqliteDeadLetters(SqliteConnection):
    """``DeadLetters`` on SQLite: the record as JSON, status and filters as columns."""

    async def dead_letter_add(self, letter: DeadLetter) -> None:
        await self._call(lambda c: letter_insert(c, letter))

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
        found = await self._call(lambda c: c.execute(sql, (*args, limit, offset)).fetchall())
        return [rows.dead_letter(r[0], r[1]) for r in found]

    async def dead_letter_get(self, letter_id: str) -> DeadLetter | None:
        row = await self._call(
            lambda c: c.execute(
                "SELECT record, status FROM dead_letters WHERE id = ?", (letter_id,)
            ).fetchone()
        )
        return None if row is None else rows.dead_letter(row[0], row[1])

    async def dead_letter_set_status(self, letter_id: str, status: DeadLetterStatus) -> bool:
        count = await self._call(
            lambda c: (
                c.execute(
                    "UPDATE dead_letters SET status = ? WHERE id = ?", (status, letter_id)
                ).rowcount
            )
        )
        return bool(count)


def letter_insert(conn: sqlite3.Connection, letter: DeadLetter) -> None:
    row = (
        letter.id,
        letter.created_at,
        letter.status,
        letter.reason,
        letter.connector,
        letter.handler,
        letter.event_id,
        letter.event_type,
        rows.encode(letter.to_dict()),
    )
    conn.execute(
        "INSERT OR REPLACE INTO dead_letters"
        " (id, created_at, status, reason, connector, handler, event_id, event_type, record)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    ).close()
