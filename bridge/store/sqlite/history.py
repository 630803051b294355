"""Run history on SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from bridge.store import rows
from bridge.store.contracts import EventRecord, RunRecord, merged_event
from bridge.store.sqlite.connection import SqliteConnection

_CHUNK = 500  # ids per IN (...): below SQLite's limit on bound parameters


class SqliteHistory(SqliteConnection):
    """``History`` on SQLite: records as JSON, the columns the UI filters by beside them."""

    async def history_put(self, events: Sequence[EventRecord], runs: Sequence[RunRecord]) -> None:
        run_rows = [(r.event_id, r.handler, rows.encode(asdict(r))) for r in runs]

        def write(conn: sqlite3.Connection) -> None:
            # Runs first: an event's status is computed from all its stored runs.
            conn.executemany(
                "INSERT OR REPLACE INTO history_runs (event_id, handler, record) VALUES (?, ?, ?)",
                run_rows,
            )
            ids = [e.id for e in events]
            stored: dict[str, tuple[float, str]] = {}
            statuses: dict[str, list[str]] = {}
            for chunk in (ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)):
                marks = ",".join("?" * len(chunk))
                for event_id, received_at, source in conn.execute(
                    "SELECT id, received_at, json_extract(CAST(record AS TEXT), '$.source')"
                    f" FROM history_events WHERE id IN ({marks})",
                    chunk,
                ):
                    stored[event_id] = (received_at, source)
                for event_id, status in conn.execute(
                    "SELECT event_id, json_extract(CAST(record AS TEXT), '$.status')"
                    f" FROM history_runs WHERE event_id IN ({marks})",
                    chunk,
                ):
                    statuses.setdefault(event_id, []).append(status)
            event_rows = []
            for e in events:
                first = stored.get(e.id)
                m = merged_event(
                    e,
                    None if first is None else replace(e, received_at=first[0], source=first[1]),
                    statuses.get(e.id, []),
                )
                event_rows.append(
                    (
                        m.id,
                        m.type,
                        m.status,
                        m.received_at,
                        m.correlation_id,
                        m.parent_id,
                        rows.encode(asdict(m)),
                    )
                )
            conn.executemany(
                "INSERT OR REPLACE INTO history_events"
                " (id, type, status, received_at, correlation_id, parent_id, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                event_rows,
            )

        await self._call(write)

    async def history_events(
        self,
        *,
        type: str | None = None,
        status: str | None = None,
        search: str | None = None,
        before: float | None = None,
        limit: int = 50,
    ) -> list[EventRecord]:
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (("type", type), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if search is not None:
            clauses.append("(id = ? OR correlation_id = ?)")
            args += [search, search]
        if before is not None:
            clauses.append("received_at < ?")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT record FROM history_events {where} ORDER BY received_at DESC, id DESC LIMIT ?"
        )
        found = await self._call(lambda c: c.execute(sql, (*args, limit)).fetchall())
        return [rows.event_record(r[0]) for r in found]

    async def history_event(self, event_id: str) -> EventRecord | None:
        row = await self._call(
            lambda c: c.execute(
                "SELECT record FROM history_events WHERE id = ?", (event_id,)
            ).fetchone()
        )
        return None if row is None else rows.event_record(row[0])

    async def history_runs(self, event_id: str) -> list[RunRecord]:
        found = await self._call(
            lambda c: c.execute(
                "SELECT record FROM history_runs WHERE event_id = ? ORDER BY handler", (event_id,)
            ).fetchall()
        )
        return [rows.run_record(r[0]) for r in found]

    async def history_children(self, event_id: str) -> list[EventRecord]:
        found = await self._call(
            lambda c: c.execute(
                "SELECT record FROM history_events WHERE parent_id = ? ORDER BY received_at, id",
                (event_id,),
            ).fetchall()
        )
        return [rows.event_record(r[0]) for r in found]

    async def history_children_of(self, parent_ids: Sequence[str]) -> list[EventRecord]:
        ids = list(dict.fromkeys(parent_ids))

        def read(conn: sqlite3.Connection) -> list[Any]:
            found: list[Any] = []
            for chunk in (ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)):
                marks = ",".join("?" * len(chunk))
                found += conn.execute(
                    f"SELECT record FROM history_events WHERE parent_id IN ({marks})", chunk
                ).fetchall()
            return found

        return [rows.event_record(r[0]) for r in await self._call(read)]

    async def history_purge(self, older_than: float, keep: int) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS purge_ids (id TEXT PRIMARY KEY)")
            conn.execute("DELETE FROM purge_ids")
            conn.execute(
                "INSERT INTO purge_ids SELECT id FROM history_events WHERE received_at < ?",
                (older_than,),
            )
            conn.execute(
                "INSERT OR IGNORE INTO purge_ids SELECT id FROM history_events"
                " ORDER BY received_at DESC, id DESC LIMIT -1 OFFSET ?",
                (keep,),
            )
            conn.execute("DELETE FROM history_runs WHERE event_id IN (SELECT id FROM purge_ids)")
            return int(
                conn.execute(
                    "DELETE FROM history_events WHERE id IN (SELECT id FROM purge_ids)"
                ).rowcount
            )

        return await self._call(purge)
