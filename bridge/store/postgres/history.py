"""Run history on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bridge.store import rows
from bridge.store.contracts import EventRecord, RunRecord
from bridge.store.postgres.connection import PostgresConnection, count


class PostgresHistory(PostgresConnection):
    """``History`` on PostgreSQL: records as JSONB, the columns the UI filters by beside them."""

    async def history_put(self, events: Sequence[EventRecord], runs: Sequence[RunRecord]) -> None:
        async def write(conn: Any) -> None:
            if events:
                await conn.executemany(
                    "INSERT INTO history_events"
                    " (id, type, status, received_at, correlation_id, parent_id, record)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (id) DO UPDATE SET"
                    " type = excluded.type, status = excluded.status,"
                    " received_at = excluded.received_at, correlation_id = excluded.correlation_id,"
                    " parent_id = excluded.parent_id, record = excluded.record",
                    [
                        (
                            e.id,
                            e.type,
                            e.status,
                            e.received_at,
                            e.correlation_id,
                            e.parent_id,
                            rows.encode_text(asdict(e)),
                        )
                        for e in events
                    ],
                )
            if runs:
                await conn.executemany(
                    "INSERT INTO history_runs (event_id, handler, record) VALUES ($1, $2, $3::jsonb)"
                    " ON CONFLICT (event_id, handler) DO UPDATE SET record = excluded.record",
                    [(r.event_id, r.handler, rows.encode_text(asdict(r))) for r in runs],
                )

        await self._tx(write)

    async def history_events(
        self,
        *,
        type: str | None = None,
        status: str | None = None,
        search: str | None = None,
        before: float | None = None,
        limit: int = 50,
    ) -> list[EventRecord]:
        found = await self._run(
            "fetch",
            "SELECT record FROM history_events WHERE ($1::text IS NULL OR type = $1)"
            " AND ($2::text IS NULL OR status = $2)"
            " AND ($3::text IS NULL OR id = $3 OR correlation_id = $3)"
            " AND ($4::float8 IS NULL OR received_at < $4)"
            " ORDER BY received_at DESC, id DESC LIMIT $5",
            type,
            status,
            search,
            before,
            limit,
        )
        return [rows.event_record(r["record"]) for r in found]

    async def history_event(self, event_id: str) -> EventRecord | None:
        row = await self._run(
            "fetchrow", "SELECT record FROM history_events WHERE id = $1", event_id
        )
        return None if row is None else rows.event_record(row["record"])

    async def history_runs(self, event_id: str) -> list[RunRecord]:
        found = await self._run(
            "fetch",
            "SELECT record FROM history_runs WHERE event_id = $1 ORDER BY handler",
            event_id,
        )
        return [rows.run_record(r["record"]) for r in found]

    async def history_children(self, event_id: str) -> list[EventRecord]:
        found = await self._run(
            "fetch",
            "SELECT record FROM history_events WHERE parent_id = $1 ORDER BY received_at, id",
            event_id,
        )
        return [rows.event_record(r["record"]) for r in found]

    async def history_purge(self, older_than: float, keep: int) -> int:
        async def purge(conn: Any) -> int:
            ids = await conn.fetch(
                "SELECT id FROM history_events WHERE received_at < $1 UNION"
                " (SELECT id FROM history_events ORDER BY received_at DESC, id DESC OFFSET $2)",
                older_than,
                keep,
            )
            drop = [r["id"] for r in ids]
            await conn.execute("DELETE FROM history_runs WHERE event_id = ANY($1::text[])", drop)
            result = await conn.execute(
                "DELETE FROM history_events WHERE id = ANY($1::text[])", drop
            )
            return count(result)

        return int(await self._tx(purge))
