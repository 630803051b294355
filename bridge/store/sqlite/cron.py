"""Cron positions on SQLite."""

from __future__ import annotations

from bridge.store.sqlite.connection import SqliteConnection


class SqliteCron(SqliteConnection):
    """``CronPositions`` on SQLite: a tick advances only forward."""

    async def cron_last(self, name: str) -> float | None:
        row = await self._call(
            lambda c: c.execute("SELECT last_tick FROM cron WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else float(row[0])

    async def cron_advance(self, name: str, tick: float) -> bool:
        count: int = await self._call(
            lambda c: (
                c.execute(
                    "INSERT INTO cron (name, last_tick) VALUES (?, ?) ON CONFLICT (name)"
                    " DO UPDATE SET last_tick = excluded.last_tick"
                    " WHERE cron.last_tick < excluded.last_tick",
                    (name, tick),
                ).rowcount
            )
        )
        return bool(count)
