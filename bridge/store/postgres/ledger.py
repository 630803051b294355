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

RECORD_ALL = (
    "INSERT INTO ledger (handler, key, event_id, status, result, finished_at)"
    " SELECT h, k, e, s, r::jsonb, f FROM unnest($1::text[], $2::text[], $3::text[],"
    " $4::text[], $5::text[], $6::float8[]) AS t(h, k, e, s, r, f)"
    ' ORDER BY h COLLATE "C", k COLLATE "C"'
    " ON CONFLICT (handler, key) DO UPDATE SET status = excluded.status,"
    " result = excluded.result, finished_at = excluded.finished_at, event_id = excluded.event_id"
    " WHERE ledger.status <> 'succeeded'"
)
"""``RECORD`` for many runs of distinct keys at once: each argument an array, a column of
``record_args``. The server takes the rows in key order (code point order, as Python
sorts text), as the claims do: batches locking the same keys cannot deadlock."""


def record_args(e: LedgerEntry) -> tuple[Any, ...]:
    """The arguments of ``RECORD`` for ``e``."""
    return (e.handler, e.key, e.event_id, e.status, rows.encode_text(e.result), e.finished_at)


class PostgresLedger(PostgresConnection):
    """``Ledger`` on PostgreSQL: final runs by (handler, key), read in one query (lookups,
    claims and records: ``PostgresBatches``)."""

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
