"""Durable steps on PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

from bridge.store import rows
from bridge.store.postgres.connection import PostgresConnection


class PostgresSteps(PostgresConnection):
    """``Steps`` on PostgreSQL: the first record of a step wins."""

    async def step_get(self, event_id: str, handler: str, step: str) -> tuple[bool, Any]:
        row = await self._run(
            "fetchrow",
            "SELECT result FROM steps WHERE event_id = $1 AND handler = $2 AND step = $3",
            event_id,
            handler,
            step,
        )
        return (False, None) if row is None else (True, rows.decode(row["result"]))

    async def step_put(self, event_id: str, handler: str, step: str, result: Any) -> None:
        await self._run(
            "execute",
            "INSERT INTO steps (event_id, handler, step, result, created_at)"
            " VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT DO NOTHING",
            event_id,
            handler,
            step,
            rows.encode_text(result),
            time.time(),
        )
