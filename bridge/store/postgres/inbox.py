"""The inbox on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from bridge.store import rows
from bridge.store.contracts import InboxEntry
from bridge.store.postgres.connection import PostgresConnection, count


class PostgresInbox(PostgresConnection):
    """``InboxStore`` on PostgreSQL: claims skip rows another replica has locked."""

    async def inbox_put(self, entries: Sequence[InboxEntry]) -> list[bool]:
        if not entries:
            return []
        found = await self._run(
            "fetch",
            "INSERT INTO inbox (id, source, handler, body, created_at, event_source)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::float8[],"
            " $6::text[]) ON CONFLICT (event_source, id) DO NOTHING RETURNING id, event_source, seq",
            [e.id for e in entries],
            [e.source for e in entries],
            [e.handler for e in entries],
            [e.body for e in entries],
            [e.created_at for e in entries],
            [e.event_source for e in entries],
        )
        fresh = {(r["event_source"], r["id"]): r["seq"] for r in found}
        out = []
        seen: set[tuple[str, str]] = set()
        for entry in entries:
            identity = entry.identity
            new = identity in fresh and identity not in seen
            seen.add(identity)
            if new:
                entry.seq = fresh[identity]
            out.append(new)
        return out

    async def inbox_pending(self, after_seq: int, limit: int) -> list[InboxEntry]:
        found = await self._run(
            "fetch",
            f"SELECT {rows.INBOX_COLUMNS} FROM inbox"
            " WHERE done_at IS NULL AND seq > $1 ORDER BY seq LIMIT $2",
            after_seq,
            limit,
        )
        return [rows.inbox_entry(r) for r in found]

    async def inbox_done(self, seqs: Iterable[int]) -> None:
        await self._run(
            "execute",
            "UPDATE inbox SET done_at = $1, body = NULL WHERE seq = ANY($2::bigint[])",
            time.time(),
            list(seqs),
        )

    async def inbox_claim(
        self, now: float, limit: int, lease: float, owner: str = ""
    ) -> list[InboxEntry]:
        found = await self._run(
            "fetch",
            "UPDATE inbox SET leased_until = $2, lease_owner = $4 WHERE seq IN ("
            " SELECT seq FROM inbox WHERE done_at IS NULL AND leased_until < $1"
            " ORDER BY seq LIMIT $3 FOR UPDATE SKIP LOCKED)"
            f" RETURNING {rows.INBOX_COLUMNS}",
            now,
            now + lease,
            limit,
            owner,
        )
        entries = [rows.inbox_entry(r) for r in found]
        return sorted(entries, key=lambda e: e.seq)

    async def inbox_lease(self, seqs: Iterable[int], until: float) -> None:
        await self._run(
            "execute",
            "UPDATE inbox SET leased_until = $1 WHERE seq = ANY($2::bigint[])",
            until,
            list(seqs),
        )

    async def inbox_renew(self, seqs: Iterable[int], until: float, owner: str) -> list[int]:
        found = await self._run(
            "fetch",
            "UPDATE inbox SET leased_until = $1 WHERE seq = ANY($2::bigint[])"
            " AND lease_owner = $3 AND done_at IS NULL RETURNING seq",
            until,
            list(seqs),
            owner,
        )
        return [r["seq"] for r in found]

    async def inbox_finish(self, seqs: Iterable[int], owner: str) -> list[int]:
        found = await self._run(
            "fetch",
            "UPDATE inbox SET done_at = $1, body = NULL WHERE seq = ANY($2::bigint[])"
            " AND lease_owner = $3 AND done_at IS NULL RETURNING seq",
            time.time(),
            list(seqs),
            owner,
        )
        return [r["seq"] for r in found]

    async def inbox_purge(self, older_than: float) -> int:
        result = await self._run(
            "execute", "DELETE FROM inbox WHERE done_at IS NOT NULL AND done_at < $1", older_than
        )
        return count(result)


async def inbox_insert(conn: Any, entry: InboxEntry) -> None:
    """Insert ``entry`` unless its (event source, id) is known, setting its ``seq`` if new.

    Runs on the caller's connection, in its transaction (a join's close puts its
    outcome this way).
    """
    seq = await conn.fetchval(
        "INSERT INTO inbox (id, source, handler, body, created_at, event_source)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_source, id) DO NOTHING RETURNING seq",
        entry.id,
        entry.source,
        entry.handler,
        entry.body,
        entry.created_at,
        entry.event_source,
    )
    if seq is not None:
        entry.seq = seq
