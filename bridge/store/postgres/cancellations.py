"""Cancellations on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.store.contracts import Cancellation
from bridge.store.postgres.connection import PostgresConnection


class PostgresCancellations(PostgresConnection):
    """``Cancellations`` on PostgreSQL: one row per (handler, key), the latest kept."""

    async def cancel_record(self, records: Sequence[Cancellation]) -> None:
        await self._run(
            "executemany",
            "INSERT INTO cancellations (handler, key, at, expires_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (handler, key) DO UPDATE SET"
            " at = GREATEST(cancellations.at, excluded.at),"
            " expires_at = GREATEST(cancellations.expires_at, excluded.expires_at)",
            [(r.handler, r.key, r.at, r.expires_at) for r in records],
        )

    async def cancel_find(self, handler: str, keys: Sequence[str], now: float) -> dict[str, float]:
        if not keys:
            return {}
        found = await self._run(
            "fetch",
            "SELECT key, at FROM cancellations WHERE handler = $1 AND key = ANY($2::text[])"
            " AND expires_at > $3",
            handler,
            list(keys),
            now,
        )
        return {r["key"]: float(r["at"]) for r in found}

    async def cancel_purge(self, now: float) -> int:
        status = await self._run("execute", "DELETE FROM cancellations WHERE expires_at <= $1", now)
        return int(str(status).rsplit(" ", 1)[-1] or 0)
