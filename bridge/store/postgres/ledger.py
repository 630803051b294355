"""The ledger on PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.store import rows
from bridge.store.contracts import LedgerEntry
from bridge.store.postgres.connection import PostgresConnection

RECORD = (
    "INSERT INTO ledger (handler, key, event_id, status, result, finished_at)"
    " VALUES ($1, $2, $3, $4, $5::jsonb, $6)"
    " ON CONFLICT (handler, key) DO UPDATE SET status = excluded.status,"
    " result = excluded.result, finished_at = excluded.finished_at, event_id = excluded.event_id"
    " WHERE ledger.status <> 'succeeded'"
)
"""Record one final run (``record_args``); ``succeeded`` is never overwritten."""


def record_args(e: LedgerEntry) -> tuple[Any, ...]:
    """The arguments of ``RECORD`` for ``e``."""
    return (e.handler, e.key, e.event_id, e.status, rows.encode_text(e.result), e.finished_at)


class PostgresLedger(PostgresConnection):
    """``Ledger`` on PostgreSQL: final runs by (handler, key), read in one query."""

    async def ledger_final(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        if not keys:
            return {}
        found = await self._run(
            "fetch",
            "SELECT l.handler, l.key, l.status FROM ledger l"
            " JOIN unnest($1::text[], $2::text[]) AS k(handler, key)"
            " ON l.handler = k.handler AND l.key = k.key WHERE l.status <> 'running'",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {(r["handler"], r["key"]): r["status"] for r in found}

    async def ledger_record(self, entries: Sequence[LedgerEntry]) -> None:
        await self._run("executemany", RECORD, [record_args(e) for e in entries])

    async def ledger_claim(
        self,
        keys: Sequence[tuple[str, str]],
        read: Sequence[tuple[str, str]],
        event_id: str,
        owner: str,
        now: float,
        until: float,
    ) -> dict[tuple[str, str], str]:
        # The owner is kept in ``result`` and the deadline in ``finished_at``, so a claim
        # needs no column of its own. A row another transaction inserts meanwhile makes
        # the INSERT wait for it, then skip it: that key is reported ``running``.
        found = await self._run(
            "fetch",
            "WITH k AS (SELECT DISTINCT * FROM unnest($1::text[], $2::text[]) AS k(handler, key)),"
            " prior AS (SELECT l.handler, l.key, l.status, l.finished_at FROM ledger l"
            "  JOIN k ON l.handler = k.handler AND l.key = k.key),"
            " claimed AS (INSERT INTO ledger (handler, key, event_id, status, result, finished_at)"
            "  SELECT k.handler, k.key, $3, 'running', to_jsonb($4::text), $6 FROM k"
            "  LEFT JOIN prior p ON p.handler = k.handler AND p.key = k.key"
            "  WHERE p.status IS NULL OR (p.status = 'running' AND p.finished_at < $5)"
            "  ON CONFLICT (handler, key) DO UPDATE SET status = 'running',"
            "  result = excluded.result, finished_at = excluded.finished_at,"
            "  event_id = excluded.event_id"
            "  WHERE ledger.status = 'running' AND ledger.finished_at < $5"
            "  RETURNING handler, key)"
            " SELECT k.handler, k.key, CASE WHEN c.handler IS NOT NULL THEN 'claimed'"
            "  ELSE coalesce(p.status, 'running') END AS status FROM k"
            "  LEFT JOIN claimed c ON c.handler = k.handler AND c.key = k.key"
            "  LEFT JOIN prior p ON p.handler = k.handler AND p.key = k.key"
            " UNION ALL SELECT l.handler, l.key, l.status FROM ledger l"
            "  JOIN unnest($7::text[], $8::text[]) AS r(handler, key)"
            "  ON l.handler = r.handler AND l.key = r.key WHERE l.status <> 'running'",
            [k[0] for k in keys],
            [k[1] for k in keys],
            event_id,
            owner,
            now,
            until,
            [r[0] for r in read],
            [r[1] for r in read],
        )
        return {(r["handler"], r["key"]): r["status"] for r in found}

    async def ledger_release(self, keys: Sequence[tuple[str, str]], owner: str) -> None:
        if not keys:
            return
        await self._run(
            "execute",
            "DELETE FROM ledger l USING unnest($1::text[], $2::text[]) AS k(handler, key)"
            " WHERE l.handler = k.handler AND l.key = k.key AND l.status = 'running'"
            " AND l.result = to_jsonb($3::text)",
            [k[0] for k in keys],
            [k[1] for k in keys],
            owner,
        )

    async def ledger_get(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], LedgerEntry]:
        if not keys:
            return {}
        found = await self._run(
            "fetch",
            "SELECT l.handler, l.key, l.event_id, l.status, l.result, l.finished_at FROM ledger l"
            " JOIN unnest($1::text[], $2::text[]) AS k(handler, key)"
            " ON l.handler = k.handler AND l.key = k.key WHERE l.status <> 'running'",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        return {(r["handler"], r["key"]): rows.ledger_entry(r) for r in found}
