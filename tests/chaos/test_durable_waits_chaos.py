"""Chaos: durable sleeps and waits survive SIGKILL (``ctx.sleep``, ``ctx.wait_for_event``).

Sleep: N runs of ``tests.apps.waits:sleeper`` sleep S seconds; the bridge is SIGKILLed
during the sleep (K times, restarted each time). Every run resumes exactly once
(one ``woke`` line per event), no step's side effect repeats after its commit (one
``step:before`` and one ``step:after`` per event), and every run succeeds. Small in
``make test`` (20 runs, 4 s, 1 kill); full with ``BRIDGE_CHAOS_FULL=1`` (100 runs, 5 s,
2 kills), the figure of issue 20.

Wait: M runs of ``tests.apps.waits:waiter`` wait for their ``test/paid`` event; the
bridge is SIGKILLed while they wait, restarted, and the payments are sent (half of
them before the restart would be too early to prove anything, so all after). Every
run resumes once with its own payment.

Replicas: the sleep scenario again with two ``bridge run`` replicas sharing a
PostgreSQL store; one is SIGKILLed during the sleep and stays down. Every run resumes
exactly once, in one replica, and no step repeats.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.apps.orchestration import Line, parse
from tests.conftest import CHAOS_FULL
from tests.fixtures.postgres import drop_schema
from tests.support import (
    BridgeProcess,
    cloudevent,
    post_events,
    query,
    read_lines,
    recording_bridge,
    until,
    write_config,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300 if CHAOS_FULL else 120)]

RUNS, SLEEP, KILLS = (100, 5.0, 2) if CHAOS_FULL else (20, 4.0, 1)
WAITERS = 50 if CHAOS_FULL else 10


def _lines(record: Path) -> list[Line]:
    return parse(read_lines(record))


def _count(db: Path, sql: str) -> int:
    return int(query(db, sql)[0][0])  # type: ignore[arg-type]


async def _post(bridge: BridgeProcess, events: list[dict[str, object]]) -> None:
    async with aiohttp.ClientSession() as session:
        for at in range(0, len(events), 50):
            status, body = await post_events(session, bridge.url, events[at : at + 50])
            assert status == 202, body


def _config(tmp_path: Path, store: str | None = None) -> Path:
    return write_config(
        tmp_path,
        store=store,
        handlers=[
            {"id": "sleeper", "on": "test/sleep", "type": "python",
             "function": "tests.apps.waits:sleeper"},
            {"id": "waiter", "on": "test/order", "type": "python",
             "function": "tests.apps.waits:waiter", "waits": [{"event": "test/paid"}]},
        ],
        telemetry={"logs": {"format": "json", "level": "WARNING"}},
    )  # fmt: skip


async def test_sleeping_runs_resume_once_after_sigkills(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    bridge, record = recording_bridge(_config(tmp_path), tmp_path, WAITS_SLEEP=str(SLEEP))
    ids = [f"s{n}" for n in range(RUNS)]
    bridge.start()
    try:
        await bridge.wait_ready()
        await _post(bridge, [cloudevent(i, "test/sleep", {}) for i in ids])
        await until(lambda: _count(db, "SELECT COUNT(*) FROM parked") == RUNS, 30, "all asleep")
        woken_early = []
        for _ in range(KILLS):
            bridge.kill()  # during the sleep: nothing is due yet
            woken_early.extend(r for r in _lines(record) if r.what == "woke")
            bridge.start()
            await bridge.wait_ready()
        assert woken_early == [], "the kills must fall inside the sleep"
        await until(
            lambda: _count(db, "SELECT COUNT(*) FROM ledger WHERE status = 'succeeded'") == RUNS,
            60,
            "every sleeper finished",
        )
        await asyncio.sleep(1.5)  # a scheduler round more: nothing runs again
        assert await bridge.stop() == 0, bridge.log_tail()
    finally:
        bridge.kill()
    lines = _lines(record)
    by_what = {what: Counter(r.event_id for r in lines if r.what == what) for what in
               ("step:before", "woke", "step:after")}  # fmt: skip
    for what, counted in by_what.items():
        assert counted == dict.fromkeys(ids, 1), what
    assert _count(db, "SELECT COUNT(*) FROM parked") == 0
    assert _count(db, "SELECT COUNT(*) FROM dead_letters") == 0
    # Nobody woke before its time: each woke at least SLEEP after its first step.
    began = {r.event_id: r.at for r in lines if r.what == "step:before"}
    assert [
        r.event_id for r in lines if r.what == "woke" and r.at < began[r.event_id] + SLEEP
    ] == []


async def test_waiting_runs_get_their_event_after_a_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    bridge, record = recording_bridge(_config(tmp_path), tmp_path)
    ids = [f"o{n}" for n in range(WAITERS)]
    bridge.start()
    try:
        await bridge.wait_ready()
        await _post(bridge, [cloudevent(i, "test/order", {"order": i}) for i in ids])
        await until(lambda: _count(db, "SELECT COUNT(*) FROM parked") == WAITERS, 30, "all waiting")
        bridge.kill()
        bridge.start()
        await bridge.wait_ready()
        await _post(bridge, [cloudevent(f"pay-{i}", "test/paid", {"order": i}) for i in ids])
        await until(
            lambda: _count(db, "SELECT COUNT(*) FROM ledger WHERE handler = 'waiter'"
                           " AND status = 'succeeded'") == WAITERS,
            30,
            "every waiter got its payment",
        )  # fmt: skip
        assert await bridge.stop() == 0, bridge.log_tail()
    finally:
        bridge.kill()
    lines = _lines(record)
    assert Counter(r.event_id for r in lines if r.what == "woke") == dict.fromkeys(ids, 1)
    assert {r.event_id: r.what for r in lines if r.what.startswith("paid:")} == {
        i: f"paid:pay-{i}" for i in ids
    }
    assert Counter(r.event_id for r in lines if r.what == "step:before") == dict.fromkeys(ids, 1)
    assert _count(db, "SELECT COUNT(*) FROM dead_letters") == 0


async def test_sleeping_runs_resume_once_across_replicas_sharing_postgres(
    postgres: str, tmp_path: Path
) -> None:
    schema = f"chaos_waits_{uuid.uuid4().hex[:8]}"
    store = f"{postgres}?schema={schema}"
    record = tmp_path / "record.txt"
    replicas = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        env = {"BRIDGE_TEST_RECORD": str(record), "WAITS_SLEEP": str(SLEEP)}
        replicas.append(BridgeProcess(_config(workdir, store), workdir, env=env))
    a, b = replicas
    ids = [f"r{n}" for n in range(RUNS)]
    conn = await asyncpg.connect(postgres)

    async def count(sql: str) -> int:
        return int(await conn.fetchval(sql.replace("FROM ", f'FROM "{schema}".')))

    try:
        for bridge in replicas:
            bridge.start()
            await bridge.wait_ready()
        await _post(a, [cloudevent(i, "test/sleep", {}) for i in ids])
        for _ in range(300):
            if await count("SELECT COUNT(*) FROM parked") == RUNS:
                break
            await asyncio.sleep(0.1)
        assert await count("SELECT COUNT(*) FROM parked") == RUNS, a.log_tail()
        # A parks each run, then lets go of its ledger claim: a kill between the two
        # leaves the claim to lapse (minutes), which would delay, not lose, the run.
        for _ in range(100):
            if await count("SELECT COUNT(*) FROM ledger WHERE status = 'running'") == 0:
                break
            await asyncio.sleep(0.05)
        a.kill()  # during the sleep; b alone resumes every run
        assert [r for r in _lines(record) if r.what == "woke"] == []
        for _ in range(600):
            if await count("SELECT COUNT(*) FROM ledger WHERE status = 'succeeded'") == RUNS:
                break
            await asyncio.sleep(0.1)
        assert await count("SELECT COUNT(*) FROM ledger WHERE status = 'succeeded'") == RUNS
        await asyncio.sleep(1.5)  # a scheduler round more: nothing runs again
        assert await b.stop() == 0, b.log_tail()
        assert await count("SELECT COUNT(*) FROM parked") == 0
    finally:
        for bridge in replicas:
            bridge.kill()
        await conn.close()
        await drop_schema(schema)
    lines = _lines(record)
    for what in ("step:before", "woke", "step:after"):
        assert Counter(r.event_id for r in lines if r.what == what) == dict.fromkeys(ids, 1), what
    # Every wake-up ran in the surviving replica, once.
    assert {r.pid for r in lines if r.what == "woke"} == {b.proc.pid}  # type: ignore[union-attr]
