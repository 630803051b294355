"""Joins on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from bridge.store import rows
from bridge.store.contracts import InboxEntry, Join, JoinStatus
from bridge.store.postgres.connection import PostgresConnection, count
from bridge.store.postgres.inbox import inbox_insert


class PostgresJoins(PostgresConnection):
    """``Joins`` on PostgreSQL: row locks order concurrent adds and closes across replicas."""

    async def join_open(self, join: Join) -> bool:
        result = await self._run(
            "execute",
            "INSERT INTO joins (id, handler, status, expected, deadline, start, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) ON CONFLICT (id) DO NOTHING",
            join.id,
            join.handler,
            join.status,
            join.expected,
            join.deadline,
            rows.encode_text(join.start),
            join.created_at,
        )
        return str(result).endswith(" 1")

    async def join_get(self, join_id: str) -> Join | None:
        return await self._tx(lambda c: _read_join(c, join_id))  # type: ignore[no-any-return]

    async def join_open_list(self, handler: str) -> list[Join]:
        found = await self._run(
            "fetch",
            f"SELECT {rows.JOIN_COLUMNS} FROM joins WHERE handler = $1 AND status = 'open'"
            " ORDER BY created_at",
            handler,
        )
        return [rows.join(r) for r in found]

    async def join_add(self, join_id: str, member_id: str, value: Any) -> Join | None:
        async def add(conn: Any) -> Join | None:
            # The row lock orders concurrent adds to one join: each sees the members
            # added before it, so the add that completes the join always knows it.
            if await conn.fetchval("SELECT 1 FROM joins WHERE id = $1 FOR UPDATE", join_id) is None:
                return None
            await conn.execute(
                "INSERT INTO join_members (join_id, member_id, value) VALUES ($1, $2, $3::jsonb)"
                " ON CONFLICT DO NOTHING",
                join_id,
                member_id,
                rows.encode_text(value),
            )
            return await _read_join(conn, join_id)

        return await self._tx(add)  # type: ignore[no-any-return]

    async def join_close(self, join_id: str, status: JoinStatus, entry: InboxEntry | None) -> bool:
        async def close(conn: Any) -> bool:
            result = await conn.execute(
                "UPDATE joins SET status = $1, closed_at = $2 WHERE id = $3 AND status = 'open'",
                status,
                time.time(),
                join_id,
            )
            if not str(result).endswith(" 1"):
                return False
            if entry is not None:
                await inbox_insert(conn, entry)
            return True

        return bool(await self._tx(close))

    async def join_due(self, now: float, limit: int) -> list[Join]:
        async def read(conn: Any) -> list[Join]:
            ids = await conn.fetch(
                "SELECT id FROM joins WHERE status = 'open' AND deadline <= $1"
                " ORDER BY deadline LIMIT $2",
                now,
                limit,
            )
            found = [await _read_join(conn, r["id"]) for r in ids]
            return [j for j in found if j is not None]

        return await self._tx(read)  # type: ignore[no-any-return]

    async def join_buffer_add(
        self, handler: str, event_id: str, event: dict[str, Any], expires_at: float
    ) -> None:
        await self._run(
            "execute",
            "INSERT INTO join_buffer (handler, event_id, event, expires_at)"
            " VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT DO NOTHING",
            handler,
            event_id,
            rows.encode_text(event),
            expires_at,
        )

    async def join_buffered(self, handler: str, now: float) -> list[dict[str, Any]]:
        found = await self._run(
            "fetch",
            "SELECT event FROM join_buffer WHERE handler = $1 AND expires_at > $2 ORDER BY seq",
            handler,
            now,
        )
        return [rows.decode(r["event"]) for r in found]

    async def join_buffer_remove(self, handler: str, event_ids: Iterable[str]) -> None:
        await self._run(
            "execute",
            "DELETE FROM join_buffer WHERE handler = $1 AND event_id = ANY($2::text[])",
            handler,
            list(event_ids),
        )

    async def join_purge(self, now: float, closed_before: float) -> int:
        async def purge(conn: Any) -> int:
            buffered = await conn.execute("DELETE FROM join_buffer WHERE expires_at <= $1", now)
            await conn.execute(
                "DELETE FROM join_members WHERE join_id IN (SELECT id FROM joins"
                " WHERE status <> 'open' AND closed_at < $1)",
                closed_before,
            )
            joins = await conn.execute(
                "DELETE FROM joins WHERE status <> 'open' AND closed_at < $1", closed_before
            )
            return count(buffered) + count(joins)

        return int(await self._tx(purge))


async def _read_join(conn: Any, join_id: str) -> Join | None:
    row = await conn.fetchrow(f"SELECT {rows.JOIN_COLUMNS} FROM joins WHERE id = $1", join_id)
    if row is None:
        return None
    join = rows.join(row)
    members = await conn.fetch(
        "SELECT member_id, value FROM join_members WHERE join_id = $1 ORDER BY seq", join_id
    )
    join.members = {m["member_id"]: rows.decode(m["value"]) for m in members}
    return join
