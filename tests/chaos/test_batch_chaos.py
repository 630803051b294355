"""Chaos: ``batch`` through a real ``bridge run``, SIGKILLed once mid-run.

Events go in through the event API; ``tests.apps.batches:take`` gets them in
batches of at most ``max_size``. The bridge is SIGKILLed while batches run, then
restarted. Every event ends in exactly one successful batch (its ledger entry names
the batch, and each successful batch's ledger entries are exactly the events it was
called with), no batch is over ``max_size``, nothing is lost or dead-lettered.
Small in ``make test`` (1,000 events, ``max_size: 50``); full with
``BRIDGE_CHAOS_FULL=1`` (10,000 events, ``max_size: 100``), the figure of issue 20.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import aiohttp
import orjson
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

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600 if CHAOS_FULL else 120)]

EVENTS, MAX_SIZE = (10_000, 100) if CHAOS_FULL else (1_000, 50)


def _succeeded(db: Path) -> int:
    return int(query(db, "SELECT COUNT(*) FROM ledger WHERE status = 'succeeded'")[0][0])  # type: ignore[arg-type]


async def test_every_event_in_exactly_one_successful_batch_after_a_sigkill(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    config = write_config(
        tmp_path,
        handlers=[
            {"id": "bulk", "on": "test/item", "type": "python",
             "function": "tests.apps.batches:take",
             "batch": {"max_size": MAX_SIZE, "timeout": "200ms"},
             # One batch at a time: with batches in parallel, a loaded machine could see
             # every batch finish before the poll of "a fifth done" and kill nothing.
             "concurrency": 1},
        ],
        telemetry={"logs": {"format": "json", "level": "WARNING"}},
    )  # fmt: skip
    # Each batch works long enough (20 batches x 0.15 s one after another in make test)
    # that the kill lands while batches run, even when a loaded machine polls the ledger late.
    work = "0.02" if CHAOS_FULL else "0.15"
    bridge, record = recording_bridge(config, tmp_path, BATCH_WORK_SECONDS=work)
    ids = [f"i{n}" for n in range(EVENTS)]
    bridge.start()
    try:
        await bridge.wait_ready()
        async with aiohttp.ClientSession() as session:
            for at in range(0, EVENTS, 500):
                chunk = [cloudevent(i, "test/item", {"n": i}) for i in ids[at : at + 500]]
                status, body = await post_events(session, bridge.url, chunk)
                assert status == 202, body
        await until(lambda: _succeeded(db) >= EVENTS // 5, 120, "a fifth done")
        bridge.kill()  # mid-run: batches were running
        killed_at = _succeeded(db)
        bridge.start()
        await bridge.wait_ready()
        await until(lambda: _succeeded(db) == EVENTS, 300, "every event done")
        assert await bridge.stop() == 0, bridge.log_tail()
    finally:
        bridge.kill()
    assert killed_at < EVENTS, "the kill must fall while batches run"
    lines = parse(read_lines(record))
    called: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        called[line.what.removeprefix("batch:")].add(line.event_id)
    assert max(len(members) for members in called.values()) <= MAX_SIZE
    recorded: dict[str, set[str]] = defaultdict(set)
    for event_id, result in query(db, "SELECT event_id, result FROM ledger"):
        recorded[orjson.loads(result)["batch"]].add(str(event_id))  # type: ignore[arg-type]
    assert sum(len(r) for r in recorded.values()) == EVENTS  # nothing lost, one entry each
    # Each successful batch: exactly the events it was called with, all recorded by it.
    assert {b: recorded[b] for b in recorded} == {b: called[b] for b in recorded}
    assert int(query(db, "SELECT COUNT(*) FROM dead_letters")[0][0]) == 0  # type: ignore[arg-type]
    print(
        f"batches: {len(recorded)} successful, {len(called) - len(recorded)} lost to the kill;"
        f" events called more than once: {len(lines) - EVENTS}"
    )
