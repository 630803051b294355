"""The PostgreSQL store: for several replicas sharing one state.

asyncpg with a connection pool. Schema migrations are versioned in a
``bridge_schema`` table and applied under an advisory lock, so replicas starting
together migrate once. Each write commits before it returns. The tables live in
the schema named by the URL's ``schema`` query parameter (default ``public``),
so several bridges (or tests) can share one database.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from bridge.errors import StoreError
from bridge.store.base import (
    DeadLetter,
    DeadLetterStatus,
    EventRecord,
    InboxEntry,
    Join,
    JoinStatus,
    LedgerEntry,
    ParkedRun,
    RunRecord,
    event_record_from_dict,
    parked_from_dict,
    run_from_dict,
)

_LOCK_ID = 0x62726467  # advisory lock for migrations ("brdg")

MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS ledger (
        handler TEXT NOT NULL,
        key TEXT NOT NULL,
        event_id TEXT NOT NULL,
        status TEXT NOT NULL,
        result JSONB,
        finished_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (handler, key)
    );
    CREATE TABLE IF NOT EXISTS dead_letters (
        id TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        connector TEXT NOT NULL,
        handler TEXT,
        event_id TEXT,
        record JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS dead_letters_by_time ON dead_letters (created_at DESC);
    CREATE TABLE IF NOT EXISTS inbox (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        handler TEXT,
        body BYTEA,
        created_at DOUBLE PRECISION NOT NULL,
        done_at DOUBLE PRECISION
    );
    CREATE INDEX IF NOT EXISTS inbox_pending ON inbox (seq) WHERE done_at IS NULL;
    CREATE INDEX IF NOT EXISTS inbox_done ON inbox (done_at) WHERE done_at IS NOT NULL;
    """,
    # 2: orchestration: parked retries, durable steps, joins, cron positions
    """
    CREATE TABLE IF NOT EXISTS parked (
        id TEXT PRIMARY KEY,
        handler TEXT NOT NULL,
        due_at DOUBLE PRECISION NOT NULL,
        leased_until DOUBLE PRECISION NOT NULL DEFAULT 0,
        record JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS parked_due ON parked (due_at);
    CREATE TABLE IF NOT EXISTS steps (
        event_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        step TEXT NOT NULL,
        result JSONB,
        created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (event_id, handler, step)
    );
    CREATE TABLE IF NOT EXISTS joins (
        id TEXT PRIMARY KEY,
        handler TEXT NOT NULL,
        status TEXT NOT NULL,
        expected INTEGER,
        deadline DOUBLE PRECISION NOT NULL,
        start JSONB NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        closed_at DOUBLE PRECISION
    );
    CREATE INDEX IF NOT EXISTS joins_open ON joins (handler, created_at) WHERE status = 'open';
    CREATE INDEX IF NOT EXISTS joins_deadline ON joins (deadline) WHERE status = 'open';
    CREATE TABLE IF NOT EXISTS join_members (
        seq BIGSERIAL,
        join_id TEXT NOT NULL,
        member_id TEXT NOT NULL,
        value JSONB,
        PRIMARY KEY (join_id, member_id)
    );
    CREATE TABLE IF NOT EXISTS join_buffer (
        seq BIGSERIAL,
        handler TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event JSONB NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (handler, event_id)
    );
    CREATE TABLE IF NOT EXISTS cron (name TEXT PRIMARY KEY, last_tick DOUBLE PRECISION NOT NULL);
    """,
    # 3: run history for the developer UI
    """
    CREATE TABLE IF NOT EXISTS history_events (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        status TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        correlation_id TEXT,
        parent_id TEXT,
        record JSONB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS history_by_time ON history_events (received_at DESC, id DESC);
    CREATE INDEX IF NOT EXISTS history_by_correlation ON history_events (correlation_id);
    CREATE INDEX IF NOT EXISTS history_by_parent ON history_events (parent_id);
    CREATE TABLE IF NOT EXISTS history_runs (
        event_id TEXT NOT NULL,
        handler TEXT NOT NULL,
        record JSONB NOT NULL,
        PRIMARY KEY (event_id, handler)
    );
    """,
    # 4: inbox leases, so that replicas never take the same entry
    """
    ALTER TABLE inbox ADD COLUMN IF NOT EXISTS leased_until DOUBLE PRECISION NOT NULL DEFAULT 0;
    """,
    # 5: dead letters found by event (the UI's event page) and by event type
    """
    ALTER TABLE dead_letters ADD COLUMN IF NOT EXISTS event_type TEXT;
    CREATE INDEX IF NOT EXISTS dead_letters_by_event ON dead_letters (event_id);
    CREATE INDEX IF NOT EXISTS dead_letters_by_type ON dead_letters (event_type, created_at DESC);
    """,
]


def split_url(url: str) -> tuple[str, str]:
    """(asyncpg DSN, schema) from ``postgresql://...?schema=NAME``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    schema = query.pop("schema", "public")
    if not schema.replace("_", "").isalnum():
        raise StoreError(f"invalid schema name {schema!r}")
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment)), schema


class PostgresStore:
    """The store contract on PostgreSQL."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.shared = True
        self.dsn, self.schema = split_url(url)
        self.pool_size = pool_size
        self._pool: Any = None

    async def open(self) -> None:
        import asyncpg

        if self._pool is not None:
            return
        schema = self.schema
        try:
            # A startup parameter, not a SET: the pool's RESET ALL on release keeps it.
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                server_settings={"search_path": f'"{schema}"'},
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS bridge_schema (version INTEGER NOT NULL)"
                )
                version = await conn.fetchval("SELECT max(version) FROM bridge_schema") or 0
                for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    await conn.execute(script)
                    await conn.execute("INSERT INTO bridge_schema (version) VALUES ($1)", number)
        except (OSError, asyncpg.PostgresError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise StoreError(f"cannot open the PostgreSQL store: {exc}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _run(self, method: str, sql: str, *args: Any) -> Any:
        import asyncpg

        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            return await getattr(self._pool, method)(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._run("fetchval", "SELECT 1"))
        except StoreError:
            return False

    # ------------------------------------------------------------------ ledger

    async def ledger_final(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not keys:
            return {}
        rows = await self._run(
            "fetch",
            "SELECT l.handler, l.key, l.status FROM ledger l"
            " JOIN unnest($1::text[], $2::text[]) AS k(handler, key)"
            " ON l.handler = k.handler AND l.key = k.key",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {(r["handler"], r["key"]): r["status"] for r in rows}

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        await self._run(
            "executemany",
            "INSERT INTO ledger (handler, key, event_id, status, result, finished_at)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, $6)"
            " ON CONFLICT (handler, key) DO UPDATE SET status = excluded.status,"
            " result = excluded.result, finished_at = excluded.finished_at, event_id = excluded.event_id"
            " WHERE ledger.status <> 'succeeded'",
            [
                (e.handler, e.key, e.event_id, e.status, _dump(e.result), e.finished_at)
                for e in entries
            ],
        )

    # ------------------------------------------------------------------ dead letters

    async def dead_letter_add(self, letter: DeadLetter) -> None:
        await self._run(
            "execute",
            "INSERT INTO dead_letters"
            " (id, created_at, status, reason, connector, handler, event_id, record, event_type)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record",
            letter.id,
            letter.created_at,
            letter.status,
            letter.reason,
            letter.connector,
            letter.handler,
            letter.event_id,
            _dump(letter.to_dict()),
            letter.event_type,
        )

    async def dead_letters(
        self,
        *,
        status: DeadLetterStatus | None = None,
        handler: str | None = None,
        limit: int = 100,
        offset: int = 0,
        event_id: str | None = None,
        event_type: str | None = None,
    ) -> list[DeadLetter]:
        rows = await self._run(
            "fetch",
            "SELECT record, status FROM dead_letters"
            " WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR handler = $2)"
            " AND ($5::text IS NULL OR event_id = $5) AND ($6::text IS NULL OR event_type = $6)"
            " ORDER BY created_at DESC LIMIT $3 OFFSET $4",
            status,
            handler,
            limit,
            offset,
            event_id,
            event_type,
        )
        return [_letter(r["record"], r["status"]) for r in rows]

    async def dead_letter_get(self, letter_id: str) -> DeadLetter | None:
        row = await self._run(
            "fetchrow", "SELECT record, status FROM dead_letters WHERE id = $1", letter_id
        )
        return None if row is None else _letter(row["record"], row["status"])

    async def dead_letter_set_status(self, letter_id: str, status: DeadLetterStatus) -> bool:
        result = await self._run(
            "execute", "UPDATE dead_letters SET status = $1 WHERE id = $2", status, letter_id
        )
        return str(result).endswith(" 1")

    # ------------------------------------------------------------------ inbox

    async def inbox_put(self, entries: Sequence[InboxEntry]) -> list[bool]:
        if not entries:
            return []
        rows = await self._run(
            "fetch",
            "INSERT INTO inbox (id, source, handler, body, created_at)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::float8[])"
            " ON CONFLICT (id) DO NOTHING RETURNING id, seq",
            [e.id for e in entries],
            [e.source for e in entries],
            [e.handler for e in entries],
            [e.body for e in entries],
            [e.created_at for e in entries],
        )
        fresh = {r["id"]: r["seq"] for r in rows}
        out = []
        seen: set[str] = set()
        for entry in entries:
            new = entry.id in fresh and entry.id not in seen
            seen.add(entry.id)
            if new:
                entry.seq = fresh[entry.id]
            out.append(new)
        return out

    async def inbox_pending(self, after_seq: int, limit: int) -> list[InboxEntry]:
        rows = await self._run(
            "fetch",
            "SELECT seq, id, source, handler, body, created_at FROM inbox"
            " WHERE done_at IS NULL AND seq > $1 ORDER BY seq LIMIT $2",
            after_seq,
            limit,
        )
        return [_entry(r) for r in rows]

    async def inbox_done(self, seqs: Iterable[int]) -> None:
        await self._run(
            "execute",
            "UPDATE inbox SET done_at = $1, body = NULL WHERE seq = ANY($2::bigint[])",
            time.time(),
            list(seqs),
        )

    async def inbox_claim(self, now: float, limit: int, lease: float) -> list[InboxEntry]:
        rows = await self._run(
            "fetch",
            "UPDATE inbox SET leased_until = $2 WHERE seq IN ("
            " SELECT seq FROM inbox WHERE done_at IS NULL AND leased_until < $1"
            " ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED)"
            " RETURNING seq, id, source, handler, body, created_at",
            now,
            now + lease,
            limit,
        )
        entries = [_entry(r) for r in rows]
        return sorted(entries, key=lambda e: e.seq)

    async def inbox_lease(self, seqs: Iterable[int], until: float) -> None:
        await self._run(
            "execute",
            "UPDATE inbox SET leased_until = $1 WHERE seq = ANY($2::bigint[])",
            until,
            list(seqs),
        )

    async def inbox_purge(self, older_than: float) -> int:
        result = await self._run(
            "execute", "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at < $1", older_than
        )
        return int(str(result).rsplit(" ", 1)[-1])

    # ------------------------------------------------------------------ transactions

    async def _tx(self, fn: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run ``fn(connection)`` in one transaction."""
        import asyncpg

        if self._pool is None:
            raise StoreError("the store is not open")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                return await fn(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"postgresql: {exc}") from exc

    # ------------------------------------------------------------------ ledger (read)

    async def ledger_get(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], LedgerEntry]:
        if not keys:
            return {}
        rows = await self._run(
            "fetch",
            "SELECT l.handler, l.key, l.event_id, l.status, l.result, l.finished_at FROM ledger l"
            " JOIN unnest($1::text[], $2::text[]) AS k(handler, key)"
            " ON l.handler = k.handler AND l.key = k.key",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {
            (r["handler"], r["key"]): LedgerEntry(
                r["handler"],
                r["key"],
                r["event_id"],
                r["status"],
                _load(r["result"]),
                r["finished_at"],
            )
            for r in rows
        }

    # ------------------------------------------------------------------ parked retries

    async def parked_put(self, runs: Sequence[ParkedRun]) -> None:
        await self._run(
            "executemany",
            "INSERT INTO parked (id, handler, due_at, leased_until, record)"
            " VALUES ($1, $2, $3, 0, $4::jsonb) ON CONFLICT (id) DO UPDATE SET"
            " handler = excluded.handler, due_at = excluded.due_at, leased_until = 0,"
            " record = excluded.record",
            [(r.id, r.handler, r.due_at, _dump(asdict(r))) for r in runs],
        )

    async def parked_claim(self, now: float, limit: int, lease: float) -> list[ParkedRun]:
        rows = await self._run(
            "fetch",
            "UPDATE parked SET leased_until = $2 WHERE id IN ("
            " SELECT id FROM parked WHERE due_at <= $1 AND leased_until < $1"
            " ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING record",
            now,
            now + lease,
            limit,
        )
        runs = [parked_from_dict(_load(r["record"])) for r in rows]
        return sorted(runs, key=lambda r: r.due_at)

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
        rows = await self._run("fetch", "SELECT record FROM parked ORDER BY due_at LIMIT $1", limit)
        return [parked_from_dict(_load(r["record"])) for r in rows]

    # ------------------------------------------------------------------ durable steps

    async def step_get(self, event_id: str, handler: str, step: str) -> tuple[bool, Any]:
        row = await self._run(
            "fetchrow",
            "SELECT result FROM steps WHERE event_id = $1 AND handler = $2 AND step = $3",
            event_id,
            handler,
            step,
        )
        return (False, None) if row is None else (True, _load(row["result"]))

    async def step_put(self, event_id: str, handler: str, step: str, result: Any) -> None:
        await self._run(
            "execute",
            "INSERT INTO steps (event_id, handler, step, result, created_at)"
            " VALUES ($1, $2, $3, $4::jsonb, $5) ON CONFLICT DO NOTHING",
            event_id,
            handler,
            step,
            _dump(result),
            time.time(),
        )

    # ------------------------------------------------------------------ joins

    async def join_open(self, join: Join) -> bool:
        result = await self._run(
            "execute",
            "INSERT INTO joins (id, handler, status, expected, deadline, start, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7) ON CONFLICT (id) DO NOTHING",
            join.id,
            join.handler,
            join.status,
            join.expected,
            join.deadline,
            _dump(join.start),
            join.created_at,
        )
        return str(result).endswith(" 1")

    async def join_get(self, join_id: str) -> Join | None:
        return await self._tx(lambda c: _read_join(c, join_id))  # type: ignore[no-any-return]

    async def join_open_list(self, handler: str) -> list[Join]:
        rows = await self._run(
            "fetch",
            f"SELECT {_JOIN_COLUMNS} FROM joins WHERE handler = $1 AND status = 'open'"
            " ORDER BY created_at",
            handler,
        )
        return [_join(r) for r in rows]

    async def join_add(self, join_id: str, member_id: str, value: Any) -> Join | None:
        async def add(conn: Any) -> Join | None:
            # The row lock orders concurrent adds to one join: each sees the members
            # added before it, so the add that completes the join always knows it.
            if await conn.fetchval("SELECT 1 FROM joins WHERE id = $1 FOR UPDATE", join_id) is None:
                return None
            await conn.execute(
                "INSERT INTO join_members (join_id, member_id, value) VALUES ($1, $2, $3::jsonb)"
                " ON CONFLICT DO NOTHING",
                join_id,
                member_id,
                _dump(value),
            )
            return await _read_join(conn, join_id)

        return await self._tx(add)  # type: ignore[no-any-return]

    async def join_close(self, join_id: str, status: JoinStatus, entry: InboxEntry | None) -> bool:
        async def close(conn: Any) -> bool:
            result = await conn.execute(
                "UPDATE joins SET status = $1, closed_at = $2 WHERE id = $3 AND status = 'open'",
                status,
                time.time(),
                join_id,
            )
            if not str(result).endswith(" 1"):
                return False
            if entry is not None:
                seq = await conn.fetchval(
                    "INSERT INTO inbox (id, source, handler, body, created_at)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING seq",
                    entry.id,
                    entry.source,
                    entry.handler,
                    entry.body,
                    entry.created_at,
                )
                if seq is not None:
                    entry.seq = seq
            return True

        return bool(await self._tx(close))

    async def join_due(self, now: float, limit: int) -> list[Join]:
        async def read(conn: Any) -> list[Join]:
            ids = await conn.fetch(
                "SELECT id FROM joins WHERE status = 'open' AND deadline <= $1"
                " ORDER BY deadline LIMIT $2",
                now,
                limit,
            )
            found = [await _read_join(conn, r["id"]) for r in ids]
            return [j for j in found if j is not None]

        return await self._tx(read)  # type: ignore[no-any-return]

    async def join_buffer_add(
        self, handler: str, event_id: str, event: dict[str, Any], expires_at: float
    ) -> None:
        await self._run(
            "execute",
            "INSERT INTO join_buffer (handler, event_id, event, expires_at)"
            " VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT DO NOTHING",
            handler,
            event_id,
            _dump(event),
            expires_at,
        )

    async def join_buffered(self, handler: str, now: float) -> list[dict[str, Any]]:
        rows = await self._run(
            "fetch",
            "SELECT event FROM join_buffer WHERE handler = $1 AND expires_at > $2 ORDER BY seq",
            handler,
            now,
        )
        return [_load(r["event"]) for r in rows]

    async def join_buffer_remove(self, handler: str, event_ids: Iterable[str]) -> None:
        await self._run(
            "execute",
            "DELETE FROM join_buffer WHERE handler = $1 AND event_id = ANY($2::text[])",
            handler,
            list(event_ids),
        )

    async def join_purge(self, now: float, closed_before: float) -> int:
        async def purge(conn: Any) -> int:
            buffered = await conn.execute("DELETE FROM join_buffer WHERE expires_at <= $1", now)
            await conn.execute(
                "DELETE FROM join_members WHERE join_id IN (SELECT id FROM joins"
                " WHERE status <> 'open' AND closed_at < $1)",
                closed_before,
            )
            joins = await conn.execute(
                "DELETE FROM joins WHERE status <> 'open' AND closed_at < $1", closed_before
            )
            return _count(buffered) + _count(joins)

        return int(await self._tx(purge))

    # ------------------------------------------------------------------ cron

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

    # ------------------------------------------------------------------ run history

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
                            _dump(asdict(e)),
                        )
                        for e in events
                    ],
                )
            if runs:
                await conn.executemany(
                    "INSERT INTO history_runs (event_id, handler, record) VALUES ($1, $2, $3::jsonb)"
                    " ON CONFLICT (event_id, handler) DO UPDATE SET record = excluded.record",
                    [(r.event_id, r.handler, _dump(asdict(r))) for r in runs],
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
        rows = await self._run(
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
        return [event_record_from_dict(_load(r["record"])) for r in rows]

    async def history_event(self, event_id: str) -> EventRecord | None:
        row = await self._run(
            "fetchrow", "SELECT record FROM history_events WHERE id = $1", event_id
        )
        return None if row is None else event_record_from_dict(_load(row["record"]))

    async def history_runs(self, event_id: str) -> list[RunRecord]:
        rows = await self._run(
            "fetch",
            "SELECT record FROM history_runs WHERE event_id = $1 ORDER BY handler",
            event_id,
        )
        return [run_from_dict(_load(r["record"])) for r in rows]

    async def history_children(self, event_id: str) -> list[EventRecord]:
        rows = await self._run(
            "fetch",
            "SELECT record FROM history_events WHERE parent_id = $1 ORDER BY received_at, id",
            event_id,
        )
        return [event_record_from_dict(_load(r["record"])) for r in rows]

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
            return _count(result)

        return int(await self._tx(purge))


_JOIN_COLUMNS = "id, handler, start, expected, deadline, status, created_at"


def _join(row: Any) -> Join:
    return Join(
        id=row["id"],
        handler=row["handler"],
        start=_load(row["start"]),
        expected=row["expected"],
        deadline=row["deadline"],
        status=row["status"],
        created_at=row["created_at"],
    )


async def _read_join(conn: Any, join_id: str) -> Join | None:
    row = await conn.fetchrow(f"SELECT {_JOIN_COLUMNS} FROM joins WHERE id = $1", join_id)
    if row is None:
        return None
    join = _join(row)
    members = await conn.fetch(
        "SELECT member_id, value FROM join_members WHERE join_id = $1 ORDER BY seq", join_id
    )
    join.members = {m["member_id"]: _load(m["value"]) for m in members}
    return join


def _entry(row: Any) -> InboxEntry:
    return InboxEntry(
        id=row["id"],
        body=bytes(row["body"]),
        source=row["source"],
        handler=row["handler"],
        created_at=row["created_at"],
        seq=row["seq"],
    )


def _count(status: Any) -> int:
    """Rows affected, from a command status such as ``DELETE 3``."""
    return int(str(status).rsplit(" ", 1)[-1])


def _load(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


def _letter(record: Any, status: str) -> DeadLetter:
    letter = DeadLetter.from_dict(
        orjson.loads(record) if isinstance(record, str | bytes) else record
    )
    letter.status = status  # type: ignore[assignment]
    return letter
