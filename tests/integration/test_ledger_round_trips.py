"""The ledger's store round trips are paid per batch of deliveries, not per event.

2,000 events through the memory connector (``max_in_flight: 1000``), 4 handlers, the
ledger on, on SQLite and on PostgreSQL: every run is recorded in the ledger, and the
store round trips (``store.round_trips``, also ``bridge_store_round_trips_total``) made
while the events are processed are at most 0.1 per event. One read and one write per
event, unbatched, would be 2 or more.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from connectors.memory import BROKER
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.support import until

EVENTS = 2000
WIDTH = 4
RUNS: list[int] = [0]


async def count(event: Event[Any], ctx: Context) -> None:
    RUNS[0] += 1


def config(store: str, topic: str) -> str:
    handlers = "".join(
        f'  - {{id: h{n}, on: job/run, type: python, function: "{__name__}:count"}}\n'
        for n in range(WIDTH)
    )
    return (
        f"version: 1\nstore: '{store}'\nledger: true\nserver: {{enabled: false}}\n"
        f"connectors:\n  in: {{type: memory, topic: {topic},"
        " consume: {event: {type: job/run}, max_in_flight: 1000}}\n"
        f"handlers:\n{handlers}"
    )


async def round_trips_per_event(store_url: str) -> tuple[float, int, float]:
    """(round trips per event, ledger entries, the metric's total) of one run."""
    RUNS[0] = 0
    topic = f"round-trips-{uuid.uuid4().hex[:8]}"
    runtime = Runtime(load_config_text(config(store_url, topic), {}))
    task = asyncio.create_task(runtime.run())
    try:
        await until(lambda: runtime.ready or task.done(), 30, "the bridge ready")
        assert not task.done(), task.result()
        store: Any = runtime.store
        before = sum(store.round_trips.values())
        for n in range(EVENTS):
            BROKER.put(topic, orjson.dumps({"n": n}))
        await until(lambda: RUNS[0] >= EVENTS * WIDTH, 120, "every run", every=0.02)
        # Settled means recorded: wait until the source has nothing in flight.
        await until(
            lambda: runtime.metrics.value("bridge_in_flight") == 0,
            30,
            "every delivery settled",
            every=0.01,
        )
        trips = sum(store.round_trips.values()) - before
        metric = runtime.metrics.value("bridge_store_round_trips_total")
    finally:
        runtime.request_stop()
        await task
    assert RUNS[0] == EVENTS * WIDTH  # each run once: nothing redelivered or re-run
    return trips / EVENTS, await succeeded(store_url), metric


async def succeeded(store_url: str) -> int:
    """Ledger rows with status ``succeeded``, read past the bridge (which has stopped)."""
    sql = "SELECT count(*) FROM ledger WHERE status = 'succeeded'"
    if store_url.startswith("sqlite:"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            return int(conn.execute(sql).fetchone()[0])
    schema = store_url.rpartition("schema=")[2]
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        return int(await conn.fetchval(sql.replace("FROM ledger", f'FROM "{schema}".ledger')))
    finally:
        await conn.close()


async def test_sqlite_ledger_round_trips_per_event(tmp_path: Path) -> None:
    per_event, entries, metric = await round_trips_per_event(f"sqlite:///{tmp_path}/l.db")
    assert entries == EVENTS * WIDTH
    assert metric > 0
    assert per_event <= 0.1, f"{per_event:.3f} store round trips per event"


async def test_postgres_ledger_round_trips_per_event(postgres: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        per_event, entries, metric = await round_trips_per_event(f"{POSTGRES_URL}?schema={schema}")
    finally:
        await drop_schema(schema)
    assert entries == EVENTS * WIDTH
    assert metric > 0
    assert per_event <= 0.1, f"{per_event:.3f} store round trips per event"


pytestmark = pytest.mark.integration
