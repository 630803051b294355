"""The SQLite ledger's calls from concurrent deliveries share round trips, and each caller
is answered only once its own entries are committed; a bad entry fails only its call."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bridge.errors import StoreError
from bridge.store.contracts import LedgerEntry
from bridge.store.sqlite import SqliteStore


async def test_concurrent_lookups_and_records_share_round_trips(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    try:
        await store.ledger_record([LedgerEntry("h", "k0", "e0")])
        before = sum(store.round_trips.values())
        finals = await asyncio.gather(*(store.ledger_final([("h", f"k{n}")]) for n in range(100)))
        await asyncio.gather(
            *(store.ledger_record([LedgerEntry("h", f"k{n}", f"e{n}")]) for n in range(1, 100))
        )
        trips = sum(store.round_trips.values()) - before
        # Committed before answered: another connection sees every entry at once.
        with sqlite3.connect(tmp_path / "l.db") as conn:
            rows = conn.execute("SELECT count(*) FROM ledger WHERE status = 'succeeded'")
            recorded = rows.fetchone()[0]
    finally:
        await store.close()
    assert finals[0] == {("h", "k0"): "succeeded"}
    assert all(f == {} for f in finals[1:])
    assert recorded == 100
    assert trips <= 4  # 200 calls; one by one they would be 200


async def test_a_bad_entry_fails_only_its_own_call(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/l.db")
    await store.open()
    try:
        good = store.ledger_record([LedgerEntry("h", "good", "e1", result={"ok": 1})])
        bad = store.ledger_record([LedgerEntry("h", "bad", "e2", result={"x": 2**70})])
        outcomes = await asyncio.gather(good, bad, return_exceptions=True)
        found = await store.ledger_final([("h", "good"), ("h", "bad")])
    finally:
        await store.close()
    assert outcomes[0] is None
    assert isinstance(outcomes[1], StoreError)
    assert found == {("h", "good"): "succeeded"}
