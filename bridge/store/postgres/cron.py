"""Cron positions on PostgreSQL."""

from __future__ import annotations

from bridge.store.postgres.connection import PostgresConnection


class PostgresCron(PostgresConnection):
    """``CronPositions`` on PostgreSQL: a tick advances only forward, once across replicas."""

    async def cron_last(self, name: str) -> float | None:
        value = await self._run("fetchval", "SELECT last_tick FROM cron WHERE name = $1", name)
        return None if value is None else float(value)

    async def cron_advance(self, name: str, tick: float) -> bool:
        result = await self._run(
            "execute",
            "INSERT INTO cron (name, last_tick) VALUES ($1, $2) ON CONFLICT (name)"
            " DO UPDATE SET last_tick = excluded.last_tick WHERE cron.last_tick < excluded.last_tick",
            name,
            tick,
        )
        return str(result).endswith(" 1")
