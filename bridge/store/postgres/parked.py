"""Parked runs on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict

from bridge.store import rows
from bridge.store.contracts import ParkedRun
from bridge.store.postgres.connection import PostgresConnection


class PostgresParked(PostgresConnection):
    """``ParkedRuns`` on PostgreSQL: claims skip rows another replica has locked."""

    async def parked_put(self, runs: Sequence[ParkedRun]) -> None:
        await self._run(
            "executemany",
            "INSERT INTO parked (id, handler, due_at, leased_until, lease_owner, record)"
            " VALUES ($1, $2, $3, 0, '', $4::jsonb) ON CONFLICT (id) DO UPDATE SET"
            " handler = excluded.handler, due_at = excluded.due_at, leased_until = 0,"
            " lease_owner = '', record = excluded.record",
            [(r.id, r.handler, r.due_at, rows.encode_text(asdict(r))) for r in runs],
        )

    async def parked_claim(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[ParkedRun]:
        found = await self._run(
            "fetch",
            "UPDATE parked SET leased_until = $2, lease_owner = $4 WHERE id IN ("
            " SELECT id FROM parked WHERE due_at <= $1 AND leased_until < $1"
            " ORDER BY COALESCE((record->>'priority')::int, 0) DESC, due_at"
            " LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING record",
            now,
            now + lease,
            limit,
            owner,
        )
        runs = [rows.parked_run(r["record"]) for r in found]
        return sorted(runs, key=lambda r: (-r.priority, r.due_at))

    async def parked_renew(self, ids: Iterable[str], until: float, owner: str) -> list[str]:
        # A run parked again has its lease released (0): it is due anew, not held.
        found = await self._run(
            "fetch",
            "UPDATE parked SET leased_until = $1 WHERE id = ANY($2::text[])"
            " AND lease_owner = $3 AND leased_until > 0 RETURNING id",
            until,
            list(ids),
            owner,
        )
        return [r["id"] for r in found]

    async def parked_wake(self, ids: Iterable[str], now: float) -> list[str]:
        found = await self._run(
            "fetch",
            "UPDATE parked SET due_at = LEAST(due_at, $2),"
            " record = jsonb_set(record, '{due_at}', to_jsonb(LEAST(due_at, $2)))"
            " WHERE id = ANY($1::text[]) RETURNING id",
            list(ids),
            now,
        )
        return [r["id"] for r in found]

    async def parked_done(self, ids: Iterable[str]) -> None:
        await self._run("execute", "DELETE FROM parked WHERE id = ANY($1::text[])", list(ids))

    async def parked_lease(self, ids: Iterable[str] | None, until: float) -> None:
        if ids is None:
            await self._run("execute", "UPDATE parked SET leased_until = $1", until)
            return
        await self._run(
            "execute",
            "UPDATE parked SET leased_until = $1 WHERE id = ANY($2::text[])"
            " AND ($1 = 0 OR leased_until > 0)",
            until,
            list(ids),
        )

    async def parked_list(self, limit: int = 100) -> list[ParkedRun]:
        found = await self._run(
            "fetch", "SELECT record FROM parked ORDER BY due_at LIMIT $1", limit
        )
        return [rows.parked_run(r["record"]) for r in found]

    async def parked_of(self, handler: str) -> list[ParkedRun]:
        found = await self._run(
            "fetch", "SELECT record FROM parked WHERE handler = $1 ORDER BY due_at", handler
        )
        return [rows.parked_run(r["record"]) for r in found]
