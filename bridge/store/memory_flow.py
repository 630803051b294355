"""Flow-control state in process memory (``FlowState``): the memory store's share of it."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.store.contracts.flow import DebounceState
from bridge.store.flow_rules import (
    FIRED,
    budget_admit,
    debounce_step,
    gcra_reserve,
    window_admit,
)


@dataclass(slots=True)
class _FlowTables:
    once: dict[tuple[str, str], float] = field(default_factory=dict)
    gcra: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    window: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    budgets: dict[str, list[list[float]]] = field(default_factory=dict)
    # (handler, key) -> (latest event id, its time, first arrival, due)
    debounce: dict[tuple[str, str], tuple[str, float, float, float]] = field(default_factory=dict)
    # (handler, key) -> owner -> [leased until, asked to cancel]
    slots: dict[tuple[str, str], dict[str, list[float]]] = field(default_factory=dict)


class MemoryFlowState:
    """``FlowState`` in this process's memory: the controls hold in process only."""

    def _flow(self) -> _FlowTables:
        tables: _FlowTables | None = getattr(self, "_flow_tables", None)
        if tables is None:
            tables = _FlowTables()
            self._flow_tables = tables
        return tables

    async def flow_once(
        self, handler: str, keys: Sequence[str], now: float, ttl: float
    ) -> list[bool]:
        once = self._flow().once
        taken = []
        for key in keys:
            until = once.get((handler, key))
            ok = until is None or until <= now
            if ok:
                once[(handler, key)] = now + ttl
            taken.append(ok)
        return taken

    async def flow_gcra(
        self, handler: str, key: str, now: float, interval: float, tolerance: float, count: int
    ) -> list[float]:
        gcra = self._flow().gcra
        row, times = gcra_reserve(gcra.get((handler, key)), now, interval, tolerance, count)
        gcra[(handler, key)] = row
        return times

    async def flow_window(
        self, handler: str, key: str, now: float, per: float, limit: int, count: int
    ) -> int:
        logs = self._flow().window
        log = list(logs.get((handler, key), ()))
        admitted = window_admit(log, now, per, limit, count)
        logs[(handler, key)] = deque(log)
        return admitted

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
        slices = self._flow().budgets.setdefault(name, [])
        return budget_admit(slices, now, window, ratio, reserve, firsts, retries)

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
        rows = self._flow().debounce
        row = debounce_step(rows.get((handler, key)), event_id, at, now, period, timeout)
        rows[(handler, key)] = row
        return row[0], row[3]

    async def flow_debounce_fire(
        self, handler: str, key: str, event_id: str, now: float
    ) -> tuple[DebounceState, float]:
        rows = self._flow().debounce
        row = rows.get((handler, key))
        if row is None or row[0] != event_id:
            return "superseded", 0.0
        if row[3] > now:
            return "wait", row[3]
        rows[(handler, key)] = (row[0], row[1], row[2], FIRED)
        return "fire", 0.0

    async def flow_slot_take(
        self, handler: str, key: str, owner: str, limit: int, now: float, until: float
    ) -> list[str]:
        slots = self._flow().slots
        held = slots.setdefault((handler, key), {})
        for stale in [o for o, (lease, _) in held.items() if lease < now]:
            del held[stale]
        if owner in held or len(held) < limit:
            held[owner] = [until, 0.0]
            return []
        return list(held)

    async def flow_slot_release(self, handler: str, key: str, owner: str) -> None:
        slots = self._flow().slots
        held = slots.get((handler, key))
        if held is not None:
            held.pop(owner, None)
            if not held:
                del slots[(handler, key)]

    async def flow_slot_cancel(self, handler: str, key: str, owners: Sequence[str]) -> None:
        held = self._flow().slots.get((handler, key), {})
        for owner in owners:
            if owner in held:
                held[owner][1] = 1.0

    async def flow_slot_renew(
        self, handler: str, held: Sequence[tuple[str, str]], until: float
    ) -> list[tuple[str, str]]:
        slots = self._flow().slots
        lost = []
        for key, owner in held:
            lease = slots.get((handler, key), {}).get(owner)
            if lease is None or lease[1]:
                lost.append((key, owner))
            else:
                lease[0] = until
        return lost

    async def flow_claims_extend(
        self, pairs: Sequence[tuple[str, str]], owner: str, untils: Sequence[float]
    ) -> list[tuple[str, str]]:
        return []  # one process per store: no ledger claims
