"""Flow-control state on PostgreSQL (``FlowState``), shared by every replica of a schema.

Each call is one statement or one transaction: one round trip, whatever the number
of runs it answers (``count``, a batch of keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import bridge.jsonio as jsonio
from bridge.store import rows
from bridge.store.contracts.flow import DebounceState
from bridge.store.flow_rules import FIRED, budget_admit, debounce_step, gcra_times, window_admit
from bridge.store.postgres.connection import PostgresConnection


class PostgresFlow(PostgresConnection):
    """``FlowState`` on PostgreSQL: row locks make each step atomic across replicas."""

    async def flow_once(
        self, handler: str, keys: Sequence[str], now: float, ttl: float
    ) -> list[bool]:
        unique = list(dict.fromkeys(keys))
        found = await self._run(
            "fetch",
            "INSERT INTO flow_once (handler, key, until)"
            " SELECT $1, k, $3 FROM unnest($2::text[]) AS k"
            " ON CONFLICT (handler, key) DO UPDATE SET until = excluded.until"
            " WHERE flow_once.until <= $4 RETURNING key",
            handler,
            unique,
            now + ttl,
            now,
        )
        taken = {r["key"] for r in found}
        out = []
        for key in keys:  # a key given twice is taken for its first only
            out.append(key in taken)
            taken.discard(key)
        return out

    async def flow_claims_extend(
        self, pairs: Sequence[tuple[str, str]], owner: str, untils: Sequence[float]
    ) -> list[tuple[str, str]]:
        if not pairs:
            return []
        # A claim keeps its owner in ``result`` and its deadline in ``finished_at``
        # (``bridge.store.postgres.batch``); a final entry is never touched.
        found = await self._run(
            "fetch",
            "UPDATE ledger l SET finished_at = GREATEST(l.finished_at, k.until)"
            " FROM unnest($1::text[], $2::text[], $4::float8[]) AS k(handler, key, until)"
            " WHERE l.handler = k.handler AND l.key = k.key AND l.status = 'running'"
            " AND l.result = to_jsonb($3::text) RETURNING l.handler, l.key",
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            owner,
            list(untils),
        )
        return [(r["handler"], r["key"]) for r in found]

    async def flow_gcra(
        self, handler: str, key: str, now: float, interval: float, tolerance: float, count: int
    ) -> list[float]:
        step = count * interval
        # ``seen``: the latest ``now`` of the key, so that a caller whose clock reading
        # arrives after a later one's cannot be given a start before theirs.
        row = await self._run(
            "fetchrow",
            "INSERT INTO flow_gcra (handler, key, tat, seen)"
            " VALUES ($1, $2, $3::float8 + $4::float8, $3::float8)"
            " ON CONFLICT (handler, key) DO UPDATE"
            " SET seen = GREATEST(flow_gcra.seen, $3::float8),"
            " tat = GREATEST(flow_gcra.tat, flow_gcra.seen, $3::float8) + $4::float8"
            " RETURNING tat, seen",
            handler,
            key,
            now,
            step,
        )
        seen = float(row["seen"])
        return gcra_times(float(row["tat"]) - step, seen, interval, tolerance, count)

    async def flow_window(
        self, handler: str, key: str, now: float, per: float, limit: int, count: int
    ) -> int:
        async def admit(conn: Any) -> int:
            await conn.execute(
                "INSERT INTO flow_window (handler, key, times) VALUES ($1, $2, '{}')"
                " ON CONFLICT DO NOTHING",
                handler,
                key,
            )
            times = await conn.fetchval(
                "SELECT times FROM flow_window WHERE handler = $1 AND key = $2 FOR UPDATE",
                handler,
                key,
            )
            log = sorted(times or [])
            admitted = window_admit(log, now, per, limit, count)
            await conn.execute(
                "UPDATE flow_window SET times = $3 WHERE handler = $1 AND key = $2",
                handler,
                key,
                log,
            )
            return admitted

        result: int = await self._tx(admit)
        return result

    async def flow_budget(
        self,
        name: str,
        now: float,
        window: float,
        ratio: float,
        reserve: float,
        firsts: int,
        retries: int,
    ) -> int:
        async def admit(conn: Any) -> int:
            await conn.execute(
                "INSERT INTO flow_budgets (name, slices) VALUES ($1, '[]') ON CONFLICT DO NOTHING",
                name,
            )
            raw = await conn.fetchval(
                "SELECT slices FROM flow_budgets WHERE name = $1 FOR UPDATE", name
            )
            slices: list[list[float]] = rows.decode(raw)
            admitted = budget_admit(slices, now, window, ratio, reserve, firsts, retries)
            await conn.execute(
                "UPDATE flow_budgets SET slices = $2::jsonb WHERE name = $1",
                name,
                jsonio.dumps(slices).decode(),
            )
            return admitted

        result: int = await self._tx(admit)
        return result

    async def flow_debounce(
        self,
        handler: str,
        key: str,
        event_id: str,
        at: float,
        now: float,
        period: float,
        timeout: float | None,
    ) -> tuple[str, float]:
        async def put(conn: Any) -> tuple[str, float]:
            found = await conn.fetchrow(
                "SELECT event_id, event_at, first_at, due_at FROM flow_debounce"
                " WHERE handler = $1 AND key = $2 FOR UPDATE",
                handler,
                key,
            )
            before = tuple(found) if found is not None else None
            row = debounce_step(before, event_id, at, now, period, timeout)
            if row != before:
                await conn.execute(
                    "INSERT INTO flow_debounce (handler, key, event_id, event_at, first_at, due_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (handler, key) DO UPDATE SET"
                    " event_id = excluded.event_id, event_at = excluded.event_at,"
                    " first_at = excluded.first_at, due_at = excluded.due_at",
                    handler,
                    key,
                    *row,
                )
            return row[0], row[3]

        result: tuple[str, float] = await self._tx(put)
        return result

    async def flow_debounce_fire(
        self, handler: str, key: str, event_id: str, now: float
    ) -> tuple[DebounceState, float]:
        row = await self._run(
            "fetchrow",
            "WITH cur AS (SELECT event_id, due_at FROM flow_debounce"
            " WHERE handler = $1 AND key = $2 FOR UPDATE),"
            " fired AS (UPDATE flow_debounce d SET due_at = $5 FROM cur WHERE d.handler = $1"
            " AND d.key = $2 AND cur.event_id = $3 AND cur.due_at <= $4 RETURNING d.key)"
            " SELECT cur.event_id, cur.due_at, (SELECT count(*) FROM fired) AS fired FROM cur",
            handler,
            key,
            event_id,
            now,
            FIRED,
        )
        if row is None or row["event_id"] != event_id:
            return "superseded", 0.0
        if row["fired"]:
            return "fire", 0.0
        return "wait", float(row["due_at"])

    async def flow_slot_take(
        self, handler: str, key: str, owner: str, limit: int, now: float, until: float
    ) -> list[str]:
        async def take(conn: Any) -> list[str]:
            # One transaction per key at a time: the advisory lock orders takers of a key.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1 || chr(31) || $2))", handler, key
            )
            await conn.execute(
                "DELETE FROM flow_slots WHERE handler = $1 AND key = $2 AND until < $3",
                handler,
                key,
                now,
            )
            found = await conn.fetch(
                "SELECT owner FROM flow_slots WHERE handler = $1 AND key = $2 AND owner <> $3",
                handler,
                key,
                owner,
            )
            holders = [r["owner"] for r in found]
            if len(holders) >= limit:
                return holders
            await conn.execute(
                "INSERT INTO flow_slots (handler, key, owner, until) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (handler, key, owner) DO UPDATE SET until = excluded.until",
                handler,
                key,
                owner,
                until,
            )
            return []

        result: list[str] = await self._tx(take)
        return result

    async def flow_slot_release(self, handler: str, key: str, owner: str) -> None:
        await self._run(
            "execute",
            "DELETE FROM flow_slots WHERE handler = $1 AND key = $2 AND owner = $3",
            handler,
            key,
            owner,
        )

    async def flow_slot_cancel(self, handler: str, key: str, owners: Sequence[str]) -> None:
        await self._run(
            "execute",
            "UPDATE flow_slots SET cancel = TRUE WHERE handler = $1 AND key = $2"
            " AND owner = ANY($3::text[])",
            handler,
            key,
            list(owners),
        )

    async def flow_slot_renew(
        self, handler: str, held: Sequence[tuple[str, str]], until: float
    ) -> list[tuple[str, str]]:
        found = await self._run(
            "fetch",
            "UPDATE flow_slots s SET until = $2 FROM unnest($3::text[], $4::text[]) AS h(k, o)"
            " WHERE s.handler = $1 AND s.key = h.k AND s.owner = h.o AND NOT s.cancel"
            " RETURNING s.key, s.owner",
            handler,
            until,
            [k for k, _ in held],
            [o for _, o in held],
        )
        kept = {(r["key"], r["owner"]) for r in found}
        return [pair for pair in held if pair not in kept]
