"""Flow-control state on SQLite (``FlowState``): one process per store, rows per key."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import bridge.jsonio as jsonio
from bridge.store.contracts.flow import DebounceState
from bridge.store.flow_rules import (
    FIRED,
    budget_admit,
    debounce_step,
    gcra_reserve,
    window_admit,
)
from bridge.store.sqlite.connection import SqliteConnection


class SqliteFlow(SqliteConnection):
    """``FlowState`` on SQLite: each call is one step on the store's one writer thread."""

    async def flow_once(
        self, handler: str, keys: Sequence[str], now: float, ttl: float
    ) -> list[bool]:
        def take(c: sqlite3.Connection) -> list[bool]:
            taken = []
            for key in keys:
                count = c.execute(
                    "INSERT INTO flow_once (handler, key, until) VALUES (?, ?, ?)"
                    " ON CONFLICT (handler, key) DO UPDATE SET until = excluded.until"
                    " WHERE flow_once.until <= ?",
                    (handler, key, now + ttl, now),
                ).rowcount
                taken.append(bool(count))
            return taken

        return await self._call(take)

    async def flow_gcra(
        self, handler: str, key: str, now: float, interval: float, tolerance: float, count: int
    ) -> list[float]:
        def reserve(c: sqlite3.Connection) -> list[float]:
            row = c.execute(
                "SELECT tat, seen FROM flow_gcra WHERE handler = ? AND key = ?", (handler, key)
            ).fetchone()
            (tat, seen), times = gcra_reserve(
                (row[0], row[1]) if row else None, now, interval, tolerance, count
            )
            c.execute(
                "INSERT OR REPLACE INTO flow_gcra (handler, key, tat, seen) VALUES (?, ?, ?, ?)",
                (handler, key, tat, seen),
            )
            return times

        return await self._call(reserve)

    async def flow_window(
        self, handler: str, key: str, now: float, per: float, limit: int, count: int
    ) -> int:
        def admit(c: sqlite3.Connection) -> int:
            row = c.execute(
                "SELECT times FROM flow_window WHERE handler = ? AND key = ?", (handler, key)
            ).fetchone()
            log: list[float] = jsonio.loads(row[0]) if row else []
            admitted = window_admit(log, now, per, limit, count)
            c.execute(
                "INSERT OR REPLACE INTO flow_window (handler, key, times) VALUES (?, ?, ?)",
                (handler, key, jsonio.dumps(log).decode()),
            )
            return admitted

        return await self._call(admit)

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
        def admit(c: sqlite3.Connection) -> int:
            row = c.execute("SELECT slices FROM flow_budgets WHERE name = ?", (name,)).fetchone()
            slices: list[list[float]] = jsonio.loads(row[0]) if row else []
            admitted = budget_admit(slices, now, window, ratio, reserve, firsts, retries)
            c.execute(
                "INSERT OR REPLACE INTO flow_budgets (name, slices) VALUES (?, ?)",
                (name, jsonio.dumps(slices).decode()),
            )
            return admitted

        return await self._call(admit)

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
        def put(c: sqlite3.Connection) -> tuple[str, float]:
            found = c.execute(
                "SELECT event_id, event_at, first_at, due_at FROM flow_debounce"
                " WHERE handler = ? AND key = ?",
                (handler, key),
            ).fetchone()
            row = debounce_step(tuple(found) if found else None, event_id, at, now, period, timeout)
            c.execute(
                "INSERT OR REPLACE INTO flow_debounce"
                " (handler, key, event_id, event_at, first_at, due_at) VALUES (?, ?, ?, ?, ?, ?)",
                (handler, key, *row),
            )
            return row[0], row[3]

        return await self._call(put)

    async def flow_debounce_fire(
        self, handler: str, key: str, event_id: str, now: float
    ) -> tuple[DebounceState, float]:
        def fire(c: sqlite3.Connection) -> tuple[DebounceState, float]:
            row = c.execute(
                "SELECT event_id, due_at FROM flow_debounce WHERE handler = ? AND key = ?",
                (handler, key),
            ).fetchone()
            if row is None or row[0] != event_id:
                return "superseded", 0.0
            if row[1] > now:
                return "wait", float(row[1])
            c.execute(
                "UPDATE flow_debounce SET due_at = ? WHERE handler = ? AND key = ?",
                (FIRED, handler, key),
            )
            return "fire", 0.0

        return await self._call(fire)

    async def flow_slot_take(
        self, handler: str, key: str, owner: str, limit: int, now: float, until: float
    ) -> list[str]:
        def take(c: sqlite3.Connection) -> list[str]:
            c.execute(
                "DELETE FROM flow_slots WHERE handler = ? AND key = ? AND until < ?",
                (handler, key, now),
            )
            holders = [
                r[0]
                for r in c.execute(
                    "SELECT owner FROM flow_slots WHERE handler = ? AND key = ? AND owner != ?",
                    (handler, key, owner),
                )
            ]
            if len(holders) >= limit:
                return holders
            c.execute(
                "INSERT OR REPLACE INTO flow_slots (handler, key, owner, until, cancel)"
                " VALUES (?, ?, ?, ?, 0)",
                (handler, key, owner, until),
            )
            return []

        return await self._call(take)

    async def flow_slot_release(self, handler: str, key: str, owner: str) -> None:
        await self._call(
            lambda c: c.execute(
                "DELETE FROM flow_slots WHERE handler = ? AND key = ? AND owner = ?",
                (handler, key, owner),
            )
        )

    async def flow_slot_cancel(self, handler: str, key: str, owners: Sequence[str]) -> None:
        def cancel(c: sqlite3.Connection) -> None:
            c.executemany(
                "UPDATE flow_slots SET cancel = 1 WHERE handler = ? AND key = ? AND owner = ?",
                [(handler, key, o) for o in owners],
            )

        await self._call(cancel)

    async def flow_slot_renew(
        self, handler: str, held: Sequence[tuple[str, str]], until: float
    ) -> list[tuple[str, str]]:
        def renew(c: sqlite3.Connection) -> list[tuple[str, str]]:
            lost = []
            for key, owner in held:
                count = c.execute(
                    "UPDATE flow_slots SET until = ? WHERE handler = ? AND key = ?"
                    " AND owner = ? AND cancel = 0",
                    (until, handler, key, owner),
                ).rowcount
                if not count:
                    lost.append((key, owner))
            return lost

        return await self._call(renew)

    async def flow_claims_extend(
        self, pairs: Sequence[tuple[str, str]], owner: str, untils: Sequence[float]
    ) -> list[tuple[str, str]]:
        return []  # one process per store: no ledger claims
