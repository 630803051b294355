"""Cron across replicas: two ``bridge run`` processes on one PostgreSQL store fire each tick
once, and a bridge restarted after a gap applies its misfire policy.

The schedule ticks every second (croniter's sixth field is seconds). A handler
appends ``<pid> <scheduled_epoch> <late>`` for every execution; the tests count
executions per tick, never wall-clock durations.
"""

from __future__ import annotations

import asyncio
import math
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from bridge.store.postgres import PostgresStore
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.support import BridgeProcess, read_lines, until

pytestmark = pytest.mark.integration

HANDLER = """
import os


async def record(event, ctx):
    line = f"{os.getpid()} {event.data['scheduled_epoch']} {event.data['late']}\\n"
    fd = os.open(os.environ["CRON_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
"""


def config(misfire: str, max_lag: str) -> str:
    return textwrap.dedent(
        f"""\
        version: 1
        store: ${{BRIDGE_STORE}}
        drain_timeout: 5s
        events:
          cron/tick: {{schema: none}}
        connectors:
          ticks:
            type: cron
            schedule: "* * * * * *"
            misfire: {misfire}
            max_lag: {max_lag}
            event: {{type: cron/tick, data: {{origin: test}}}}
        handlers:
          - id: count
            on: cron/tick
            type: python
            function: cron_recorder:record
        """
    )


@pytest.fixture
async def store_url(postgres: str) -> AsyncIterator[str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{POSTGRES_URL}?schema={schema}"
    await drop_schema(schema)


def write_app(root: Path, misfire: str, max_lag: str) -> Path:
    (root / "cron_recorder.py").write_text(HANDLER)
    path = root / "bridge.yaml"
    path.write_text(config(misfire, max_lag))
    return path


def replica(config_path: Path, workdir: Path, store_url: str, record: Path) -> BridgeProcess:
    workdir.mkdir(exist_ok=True)
    return BridgeProcess(
        config_path, workdir, env={"BRIDGE_STORE": store_url, "CRON_RECORD": str(record)}
    )


def executions(record: Path) -> list[tuple[int, int, bool]]:
    """(pid, tick, late) for every handler execution so far."""
    out = []
    for line in read_lines(record):
        pid, tick, late = line.split(" ")
        out.append((int(pid), int(tick), late == "True"))
    return out


def firings(bridge: BridgeProcess) -> Counter[str]:
    """How many times this process stored a tick's event first ("fired") or found it there."""
    counts: Counter[str] = Counter()
    for line in read_lines(bridge.log_path):
        if not line.startswith("{"):
            continue
        message = orjson.loads(line).get("message")
        if message in ("cron tick fired", "cron tick already fired"):
            counts[message] += 1
    return counts


def fired_ticks(bridge: BridgeProcess) -> list[str]:
    """The ticks whose event this process stored first."""
    out = []
    for line in read_lines(bridge.log_path):
        if line.startswith("{"):
            entry = orjson.loads(line)
            if entry.get("message") == "cron tick fired":
                out.append(entry["tick"])
    return out


async def test_two_replicas_fire_each_tick_once(tmp_path: Path, store_url: str) -> None:
    config_path = write_app(tmp_path, "skip", "10s")
    record = tmp_path / "record.txt"
    a = replica(config_path, tmp_path / "a", store_url, record)
    b = replica(config_path, tmp_path / "b", store_url, record)
    a.start()
    b.start()
    try:
        await asyncio.gather(a.wait_ready(), b.wait_ready())
        both_up = math.ceil(time.time()) + 1  # the first tick both replicas wait for
        wanted = 10

        def enough() -> bool:
            return len({t for _, t, _ in executions(record) if t >= both_up}) >= wanted

        await until(enough, 60, f"{wanted} ticks handled")
        last_wanted = max(t for _, t, _ in executions(record))
    finally:
        codes = await asyncio.gather(a.stop(), b.stop())
    assert codes == [0, 0], a.log_tail() + b.log_tail()

    handled = executions(record)
    per_tick = Counter(t for _, t, _ in handled)
    # Both replicas tried every tick; exactly one of them stored each tick's event.
    fa, fb = firings(a), firings(b)
    assert fa.total() >= wanted and fb.total() >= wanted
    stored_first = Counter(fired_ticks(a) + fired_ticks(b))
    assert max(stored_first.values()) == 1
    assert len(stored_first) == len(per_tick)
    # No tick was lost while both were up, and none fired late.
    assert set(range(both_up, last_wanted + 1)) <= set(per_tick)
    assert not any(late for _, _, late in handled)
    # Each tick's event was handled once: the replicas claim inbox entries, so the one
    # that did not store a tick does not handle it too.
    assert sorted(t for t, n in per_tick.items() if n > 1) == []


@pytest.mark.parametrize("misfire", ["skip", "fire_once"])
async def test_a_bridge_restarted_after_a_gap_applies_the_misfire_policy(
    tmp_path: Path, store_url: str, misfire: str
) -> None:
    config_path = write_app(tmp_path, misfire, "0s")
    record = tmp_path / "record.txt"
    bridge = replica(config_path, tmp_path / "a", store_url, record)
    bridge.start()
    try:
        await bridge.wait_ready()
        await until(lambda: len(executions(record)) >= 3, 30, "3 ticks before the gap")
    finally:
        assert await bridge.stop() == 0, bridge.log_tail()
    store = PostgresStore(store_url)
    await store.open()
    try:
        last = await store.cron_last("ticks")
    finally:
        await store.close()
    assert last is not None
    before = len(executions(record))

    await asyncio.sleep(3.0)  # the gap: at least three ticks come due with no bridge running
    restarted_at = time.time()
    bridge.start()
    try:
        await bridge.wait_ready()
        await until(
            lambda: len([t for _, t, _ in executions(record)[before:] if t > restarted_at]) >= 3,
            30,
            "3 ticks after the restart",
        )
    finally:
        assert await bridge.stop() == 0, bridge.log_tail()

    handled = executions(record)
    per_tick = Counter(t for _, t, _ in handled)
    assert max(per_tick.values()) == 1
    after = [(t, late) for _, t, late in handled[before:] if t > last]
    # Nothing from the gap fired as if on time, and there was no burst of catch-up ticks.
    assert [t for t, late in after if not late and t < restarted_at] == []
    late = [t for t, is_late in after if is_late]
    if misfire == "skip":
        assert late == []
    else:
        # Only the latest missed tick fired, once, late: the gap lasted at least three
        # ticks, none of its earlier ticks fired (no catch-up burst), and the restarted
        # bridge then fired on time. With max_lag 0s, a first fire after the restart that
        # takes longer than a tick (a cold PostgreSQL pool) makes the next tick late too:
        # such ticks follow the late one without a hole, each fired once.
        late.sort()
        assert late, "the latest missed tick fires once, late"
        assert late[0] >= last + 3
        assert late == list(range(late[0], late[0] + len(late))), late
        assert late[-1] < min(t for t, is_late in after if not is_late)
