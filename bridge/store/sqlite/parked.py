"""Parked runs on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict

from bridge.store import rows
from bridge.store.contracts import ParkedRun
from bridge.store.sqlite.connection import SqliteConnection


class SqliteParked(SqliteConnection):
    """``ParkedRuns`` on SQLite: the run as JSON, due time and lease as columns."""

    async def parked_put(self, runs: Sequence[ParkedRun]) -> None:
        params = [(r.id, r.handler, r.due_at, rows.encode(asdict(r))) for r in runs]
        await self._call(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO parked"
                " (id, handler, due_at, leased_until, lease_owner, record)"
                " VALUES (?, ?, ?, 0, '', ?)",
                params,
            )
        )

    async def parked_claim(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[ParkedRun]:
        def claim(conn: sqlite3.Connection) -> list[ParkedRun]:
            found = conn.execute(
                "SELECT id, record FROM parked WHERE due_at <= ? AND leased_until < ?"
                " ORDER BY COALESCE(json_extract(CAST(record AS TEXT), '$.priority'), 0) DESC,"
                " due_at"
                " LIMIT ?",
                (now, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE parked SET leased_until = ?, lease_owner = ? WHERE id = ?",
                [(now + lease, owner, r[0]) for r in found],
            )
            return [rows.parked_run(r[1]) for r in found]

        return await self._call(claim)

    async def parked_renew(self, ids: Iterable[str], until: float, owner: str) -> list[str]:
        wanted = list(ids)

        def renew(conn: sqlite3.Connection) -> list[str]:
            # A run parked again has its lease released (0): it is due anew, not held.
            return [
                i
                for i in wanted
                if conn.execute(
                    "UPDATE parked SET leased_until = ? WHERE id = ? AND lease_owner = ?"
                    " AND leased_until > 0",
                    (until, i, owner),
                ).rowcount
            ]

        return await self._call(renew)

    async def parked_wake(self, ids: Iterable[str], now: float) -> list[str]:
        wanted = list(ids)

        def wake(conn: sqlite3.Connection) -> list[str]:
            found = []
            for run_id in wanted:
                row = conn.execute("SELECT record FROM parked WHERE id = ?", (run_id,)).fetchone()
                if row is None:
                    continue
                found.append(run_id)
                run = rows.parked_run(row[0])
                if run.due_at > now:
                    run.due_at = now
                    conn.execute(
                        "UPDATE parked SET due_at = ?, record = ? WHERE id = ?",
                        (now, rows.encode(asdict(run)), run_id),
                    )
            return found

        return await self._call(wake)

    async def parked_done(self, ids: Iterable[str]) -> None:
        params = [(i,) for i in ids]
        await self._call(lambda c: c.executemany("DELETE FROM parked WHERE id = ?", params))

    async def parked_lease(self, ids: Iterable[str] | None, until: float) -> None:
        if ids is None:
            await self._call(lambda c: c.execute("UPDATE parked SET leased_until = ?", (until,)))
            return
        params = [(until, i, until) for i in ids]
        await self._call(
            lambda c: c.executemany(
                "UPDATE parked SET leased_until = ? WHERE id = ? AND (? = 0 OR leased_until > 0)",
                params,
            )
        )

    async def parked_list(self, limit: int = 100) -> list[ParkedRun]:
        found = await self._call(
            lambda c: c.execute(
                "SELECT record FROM parked ORDER BY due_at LIMIT ?", (limit,)
            ).fetchall()
        )
        return [rows.parked_run(r[0]) for r in found]

    async def parked_of(self, handler: str) -> list[ParkedRun]:
        found = await self._call(
            lambda c: c.execute(
                "SELECT record FROM parked WHERE handler = ? ORDER BY due_at", (handler,)
            ).fetchall()
        )
        return [rows.parked_run(r[0]) for r in found]
