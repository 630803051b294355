"""Cancellations on SQLite."""

from __future__ import annotations

from collections.abc import Sequence

from bridge.store.contracts import Cancellation
from bridge.store.sqlite.connection import SqliteConnection


class SqliteCancellations(SqliteConnection):
    """``Cancellations`` on SQLite: one row per (handler, key), the latest kept."""

    async def cancel_record(self, records: Sequence[Cancellation]) -> None:
        params = [(r.handler, r.key, r.at, r.expires_at) for r in records]
        await self._call(
            lambda c: c.executemany(
                "INSERT INTO cancellations (handler, key, at, expires_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (handler, key) DO UPDATE SET at = max(at, excluded.at),"
                " expires_at = max(expires_at, excluded.expires_at)",
                params,
            )
        )

    async def cancel_find(self, handler: str, keys: Sequence[str], now: float) -> dict[str, float]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        marks = ", ".join("?" * len(wanted))
        found = await self._call(
            lambda c: c.execute(
                f"SELECT key, at FROM cancellations WHERE handler = ? AND key IN ({marks})"
                " AND expires_at > ?",
                (handler, *wanted, now),
            ).fetchall()
        )
        return {key: float(at) for key, at in found}

    async def cancel_purge(self, now: float) -> int:
        return int(
            await self._call(
                lambda c: (
                    c.execute("DELETE FROM cancellations WHERE expires_at <= ?", (now,)).rowcount
                )
            )
        )
