"""Durable steps on SQLite."""

from __future__ import annotations

import time
from typing import Any

from bridge.store import rows
from bridge.store.sqlite.connection import SqliteConnection


class SqliteSteps(SqliteConnection):
    """``Steps`` on SQLite: the first record of a step wins."""

    async def step_get(self, event_id: str, handler: str, step: str) -> tuple[bool, Any]:
        row = await self._call(
            lambda c: c.execute(
                "SELECT result FROM steps WHERE event_id = ? AND handler = ? AND step = ?",
                (event_id, handler, step),
            ).fetchone()
        )
        return (False, None) if row is None else (True, rows.decode(row[0]))

    async def step_put(self, event_id: str, handler: str, step: str, result: Any) -> None:
        row = (event_id, handler, step, rows.encode(result), time.time())
        await self._call(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO steps (event_id, handler, step, result, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                row,
            )
        )
