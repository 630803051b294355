"""Run history on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bridge.store import rows
from bridge.store.contracts import EventRecord, RunRecord, merged_event
from bridge.store.postgres.connection import PostgresConnection, count


class PostgresHistory(PostgresConnection):
    """``History`` on PostgreSQL: records as JSONB, the columns the UI filters by beside them."""

    async def history_put(self, events: Sequence[EventRecord], runs: Sequence[RunRecord]) -> None:
        ids = sorted({e.id for e in events})

        async def write(conn: Any) -> None:
            # Lock the stored events first (in one order, so writers never deadlock): a
            # concurrent write of the same event then sees this one's runs.
            stored = {
                r["id"]: rows.event_record(r["record"])
                for r in await conn.fetch(
                    "SELECT id, record FROM history_events WHERE id = ANY($1::text[])"
                    " ORDER BY id FOR UPDATE",
                    ids,
                )
            }
            if runs:
                await conn.executemany(
                    "INSERT INTO history_runs (event_id, handler, record) VALUES ($1, $2, $3::jsonb)"
                    " ON CONFLICT (event_id, handler) DO UPDATE SET record = excluded.record",
                    [
                        (r.event_id, r.handler, rows.encode_text(asdict(r)))
                        for r in sorted(runs, key=lambda r: (r.event_id, r.handler))
                    ],
                )
            if not events:
                return
            statuses: dict[str, list[str]] = {}
            for r in await conn.fetch(
                "SELECT event_id, record->>'status' AS status FROM history_runs"
                " WHERE event_id = ANY($1::text[])",
                ids,
            ):
                statuses.setdefault(r["event_id"], []).append(r["status"])
            merged = [
                merged_event(e, stored.get(e.id), statuses.get(e.id, []))
                for e in sorted(events, key=lambda e: e.id)
            ]
            await conn.executemany(
                "INSERT INTO history_events"
                " (id, type, status, received_at, correlation_id, parent_id, record)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (id) DO UPDATE SET"
                " type = excluded.type, status = excluded.status,"
                " received_at = excluded.received_at, correlation_id = excluded.correlation_id,"
                " parent_id = excluded.parent_id, record = excluded.record",
                [
                    (
                        m.id,
                        m.type,
                        m.status,
                        m.received_at,
                        m.correlation_id,
                        m.parent_id,
                        rows.encode_text(asdict(m)),
                    )
                    for m in merged
                ],
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

    async def history_children_of(self, parent_ids: Sequence[str]) -> list[EventRecord]:
        found = await self._run(
            "fetch",
            "SELECT record FROM history_events WHERE parent_id = ANY($1::text[])",
            list(dict.fromkeys(parent_ids)),
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
