"""Dead letters on PostgreSQL."""

from __future__ import annotations

from typing import Any

from bridge.store import rows
from bridge.store.contracts import DeadLetter, DeadLetterStatus
from bridge.store.postgres.connection import PostgresConnection

ADD = (
    "INSERT INTO dead_letters"
    " (id, created_at, status, reason, connector, handler, event_id, record, event_type)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)"
    " ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record"
)


def add_args(letter: DeadLetter) -> tuple[Any, ...]:
    return (
        letter.id,
        letter.created_at,
        letter.status,
        letter.reason,
        letter.connector,
        letter.handler,
        letter.event_id,
        rows.encode_text(letter.to_dict()),
        letter.event_type,
    )


class PostgresDeadLetters(PostgresConnection):
    """``DeadLetters`` on PostgreSQL: the record as JSONB, status and filters as columns."""

    async def dead_letter_add(self, letter: DeadLetter) -> None:
        await self._run("execute", ADD, *add_args(letter))

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
        found = await self._run(
            "fetch",
            "SELECT record, status FROM dead_letters"
            " WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR handler = $2)"
            " AND ($5::text IS NULL OR event_id = $5) AND ($6::text IS NULL OR event_type = $6)"
            " ORDER BY created_at DESC LIMIT $3 OFFSET $4",
            status,
            handler,
            limit,
            offset,
            event_id,
            event_type,
        )
        return [rows.dead_letter(r["record"], r["status"]) for r in found]

    async def dead_letter_get(self, letter_id: str) -> DeadLetter | None:
        row = await self._run(
            "fetchrow", "SELECT record, status FROM dead_letters WHERE id = $1", letter_id
        )
        return None if row is None else rows.dead_letter(row["record"], row["status"])

    async def dead_letter_set_status(self, letter_id: str, status: DeadLetterStatus) -> bool:
        result = await self._run(
            "execute", "UPDATE dead_letters SET status = $1 WHERE id = $2", status, letter_id
        )
        return str(result).endswith(" 1")
