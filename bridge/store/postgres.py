"""The PostgreSQL store: for several replicas sharing one state.

asyncpg with a connection pool. Schema migrations are versioned in a
``bridge_schema`` table and applied under an advisory lock, so replicas starting
together migrate once. Each write commits before it returns. The tables live in
the schema named by the URL's ``schema`` query parameter (default ``public``),
so several bridges (or tests) can share one database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from bridge.errors import StoreError
from bridge.store.base import DeadLetter, DeadLetterStatus, InboxEntry, LedgerEntry

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
            "INSERT INTO dead_letters (id, created_at, status, reason, connector, handler, event_id, record)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record",
            letter.id,
            letter.created_at,
            letter.status,
            letter.reason,
            letter.connector,
            letter.handler,
            letter.event_id,
            _dump(letter.to_dict()),
        )

    async def dead_letters(
        self,
        *,
        status: DeadLetterStatus | None = None,
        handler: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[DeadLetter]:
        rows = await self._run(
            "fetch",
            "SELECT record, status FROM dead_letters"
            " WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR handler = $2)"
            " ORDER BY created_at DESC LIMIT $3 OFFSET $4",
            status,
            handler,
            limit,
            offset,
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
        return [
            InboxEntry(
                id=r["id"],
                body=bytes(r["body"]),
                source=r["source"],
                handler=r["handler"],
                created_at=r["created_at"],
                seq=r["seq"],
            )
            for r in rows
        ]

    async def inbox_done(self, seqs: Iterable[int]) -> None:
        await self._run(
            "execute",
            "UPDATE inbox SET done_at = $1, body = NULL WHERE seq = ANY($2::bigint[])",
            time.time(),
            list(seqs),
        )

    async def inbox_purge(self, older_than: float) -> int:
        result = await self._run(
            "execute", "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at < $1", older_than
        )
        return int(str(result).rsplit(" ", 1)[-1])


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


def _letter(record: Any, status: str) -> DeadLetter:
    letter = DeadLetter.from_dict(
        orjson.loads(record) if isinstance(record, str | bytes) else record
    )
    letter.status = status  # type: ignore[assignment]
    return letter
