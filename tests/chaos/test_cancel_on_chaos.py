"""Chaos: ``cancel_on`` through a real ``bridge run``, SIGKILLed once.

N runs of ``tests.apps.waits:cancellable`` start and sleep; cancel events for half
their keys come during the sleep; the bridge is SIGKILLed and restarted. Cancelled
runs never start after their cancellation was recorded (no ``start`` line after
the record's time, no ``woke`` line at all) and end ``cancelled`` in the ledger; the
others wake once and succeed. Nothing is dead-lettered.

Replicas: two ``bridge run`` replicas share a PostgreSQL schema. Replica A alone
consumes the orders (a RabbitMQ queue of its own), so it starts every run and parks
it asleep; replica B alone consumes the cancellations (another queue). The runs B
cancels end ``cancelled`` while the others still sleep (B wakes them in the shared
store), never starting again; the others wake once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.apps.orchestration import parse
from tests.conftest import CHAOS_FULL
from tests.fixtures.postgres import drop_schema
from tests.fixtures.rabbitmq import RabbitAdmin
from tests.support import (
    BridgeProcess,
    cloudevent,
    post_events,
    query,
    rabbitmq_connector,
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


REPLICA_SLEEP = 20.0  # long against the cancellations' round trip: cancelled runs end inside it


def _replica_config(
    workdir: Path, store: str, url: str, queue: str, event_type: str
) -> dict[str, Any]:
    return {
        "directory": workdir,
        "store": store,
        "connectors": {"in": rabbitmq_connector(url, queue, event={"type": event_type})},
        "handlers": [
            {"id": "job", "on": "test/order", "type": "python",
             "function": "tests.apps.waits:cancellable",
             "cancel_on": [{"event": "test/cancel", "match": "event.data.order"}]},
        ],
        "telemetry": {"logs": {"format": "json", "level": "WARNING"}},
    }  # fmt: skip


async def test_cancellations_recorded_in_one_replica_stop_runs_held_in_the_other(
    postgres: str, rabbit: RabbitAdmin, tmp_path: Path
) -> None:
    schema = f"chaos_cancel_{uuid.uuid4().hex[:8]}"
    store = f"{postgres}?schema={schema}"
    orders, cancels = await rabbit.queue(), await rabbit.queue()
    record = tmp_path / "record.txt"
    replicas = []
    for name, queue, event_type in (("a", orders, "test/order"), ("b", cancels, "test/cancel")):
        workdir = tmp_path / name
        workdir.mkdir()
        config = write_config(**_replica_config(workdir, store, rabbit.url, queue, event_type))
        env = {"BRIDGE_TEST_RECORD": str(record), "WAITS_SLEEP": str(REPLICA_SLEEP)}
        replicas.append(BridgeProcess(config, workdir, env=env))
    a, b = replicas
    ids = [f"r{n}" for n in range(RUNS)]
    cancelled = set(ids[::2])
    conn = await asyncpg.connect(postgres)

    async def count(sql: str) -> int:
        return int(await conn.fetchval(sql.replace("FROM ", f'FROM "{schema}".')))

    async def reach(sql: str, want: int, within: float, what: str) -> None:
        for _ in range(int(within * 10)):
            if await count(sql) == want:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"{what}: {await count(sql)} != {want}\n{a.log_tail()}\n{b.log_tail()}"
        )

    try:
        for bridge in replicas:
            bridge.start()
            await bridge.wait_ready()
        await rabbit.publish_many(
            orders, [(json.dumps({"order": i}).encode(), {"message_id": i}) for i in ids]
        )
        await reach("SELECT COUNT(*) FROM parked", RUNS, 30, "every run asleep")
        started = [r for r in parse(read_lines(record)) if r.what == "start"]
        assert Counter(r.event_id for r in started) == dict.fromkeys(ids, 1)
        assert {r.pid for r in started} == {a.proc.pid}  # type: ignore[union-attr]
        await rabbit.publish_many(
            cancels,
            [(json.dumps({"order": i}).encode(), {"message_id": f"c-{i}"}) for i in cancelled],
        )
        await reach(
            "SELECT COUNT(*) FROM ledger WHERE handler = 'job' AND status = 'cancelled'",
            len(cancelled),
            REPLICA_SLEEP,
            "every cancelled run final",
        )
        # Promptly: every cancelled run ended while the others still sleep.
        assert [r for r in parse(read_lines(record)) if r.what == "woke"] == []
        # (a run's parked entry goes just after its ledger entry is written)
        await reach("SELECT COUNT(*) FROM parked", RUNS - len(cancelled), 5, "cancelled unparked")
        assert [r for r in parse(read_lines(record)) if r.what == "woke"] == []
        await reach(
            "SELECT COUNT(*) FROM ledger WHERE handler = 'job' AND status = 'succeeded'",
            RUNS - len(cancelled),
            REPLICA_SLEEP + 30,
            "every other run woke and finished",
        )
        await asyncio.sleep(1.5)  # a scheduler round more: nothing runs again
        recorded = {
            str(row["key"]).split("\x1f", 1)[1].strip('"'): float(row["at"])
            for row in await conn.fetch(f'SELECT key, at FROM "{schema}".cancellations')
        }
        statuses = {
            row["event_id"]: row["status"]
            for row in await conn.fetch(
                f"SELECT event_id, status FROM \"{schema}\".ledger WHERE handler = 'job'"
            )
        }
        assert await count("SELECT COUNT(*) FROM parked") == 0
        assert await count("SELECT COUNT(*) FROM dead_letters") == 0
        for bridge in replicas:
            assert await bridge.stop() == 0, bridge.log_tail()
    finally:
        for bridge in replicas:
            bridge.kill()
        await conn.close()
        await drop_schema(schema)
    assert set(recorded) == cancelled
    assert statuses == {i: "cancelled" if i in cancelled else "succeeded" for i in ids}
    lines = parse(read_lines(record))
    late = [r for r in lines if r.event_id in cancelled and r.at >= recorded[r.event_id]]
    assert late == []  # nothing of a cancelled run ran after its cancellation
    assert Counter(r.event_id for r in lines if r.what == "woke") == {
        i: 1 for i in ids if i not in cancelled
    }
