"""Chaos: ``cancel_on`` through a real ``bridge run``, SIGKILLed once.

N runs of ``tests.apps.waits:cancellable`` start and sleep; cancel events for half
their keys come during the sleep; the bridge is SIGKILLed and restarted. Cancelled
runs never start after their cancellation was recorded (no ``start`` line after
the record's time, no ``woke`` line at all) and end ``cancelled`` in the ledger; the
others wake once and succeed. Nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.apps.orchestration import parse
from tests.conftest import CHAOS_FULL
from tests.support import (
    cloudevent,
    post_events,
    query,
    read_lines,
    recording_bridge,
    until,
    write_config,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180 if CHAOS_FULL else 120)]

RUNS = 200 if CHAOS_FULL else 20
SLEEP = 4.0


def _count(db: Path, sql: str) -> int:
    return int(query(db, sql)[0][0])  # type: ignore[arg-type]


async def test_cancelled_runs_never_start_after_the_cancellation(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    config = write_config(
        tmp_path,
        handlers=[
            {"id": "job", "on": "test/order", "type": "python",
             "function": "tests.apps.waits:cancellable",
             "cancel_on": [{"event": "test/cancel", "match": "event.data.order"}]},
        ],
        telemetry={"logs": {"format": "json", "level": "WARNING"}},
    )  # fmt: skip
    bridge, record = recording_bridge(config, tmp_path, WAITS_SLEEP=str(SLEEP))
    ids = [f"o{n}" for n in range(RUNS)]
    cancelled = set(ids[::2])
    bridge.start()
    try:
        await bridge.wait_ready()
        async with aiohttp.ClientSession() as session:
            orders = [cloudevent(i, "test/order", {"order": i}) for i in ids]
            for at in range(0, RUNS, 50):
                status, body = await post_events(session, bridge.url, orders[at : at + 50])
                assert status == 202, body
            await until(lambda: _count(db, "SELECT COUNT(*) FROM parked") == RUNS, 30, "asleep")
            cancels = [cloudevent(f"c-{i}", "test/cancel", {"order": i}) for i in sorted(cancelled)]
            for at in range(0, len(cancels), 50):
                status, body = await post_events(session, bridge.url, cancels[at : at + 50])
                assert status == 202, body
        await until(
            lambda: _count(db, "SELECT COUNT(*) FROM cancellations") == len(cancelled),
            30,
            "every cancellation recorded",
        )
        bridge.kill()
        bridge.start()
        await bridge.wait_ready()
        await until(
            lambda: _count(db, "SELECT COUNT(*) FROM ledger WHERE handler = 'job'") == RUNS,
            60,
            "every run final",
        )
        await asyncio.sleep(1.5)
        assert await bridge.stop() == 0, bridge.log_tail()
    finally:
        bridge.kill()
    recorded = {
        str(key).split("\x1f", 1)[1].strip('"'): float(at)  # type: ignore[arg-type]
        for key, at in query(db, "SELECT key, at FROM cancellations")
    }
    assert set(recorded) == cancelled
    lines = parse(read_lines(record))
    late = [r for r in lines if r.event_id in cancelled and r.at >= recorded[r.event_id]]
    assert late == []  # nothing of a cancelled run ran after its cancellation
    assert Counter(r.event_id for r in lines if r.what == "woke") == {
        i: 1 for i in ids if i not in cancelled
    }
    statuses = dict(query(db, "SELECT event_id, status FROM ledger WHERE handler = 'job'"))
    assert statuses == {i: "cancelled" if i in cancelled else "succeeded" for i in ids}
    assert _count(db, "SELECT COUNT(*) FROM parked") == 0
    assert _count(db, "SELECT COUNT(*) FROM dead_letters") == 0
