"""``batch`` on three replicas sharing one PostgreSQL schema: what holds, and what does not.

Batches are held in process: each replica batches the events it consumes. So a batch
holds the events of one replica only, and one batch key can have an open batch in
every replica at once (the same key's events are batched in several processes). What
the shared store gives: the ledger stays per event (each event in exactly one
successful batch, its entry naming that batch), and each event's inbox entry is
settled once its batch is final (none left behind). Small in ``make test``; larger
under ``BRIDGE_CHAOS_FULL=1``. See docs/flow-control-batch-cancel.md.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from tests.apps.orchestration import parse
from tests.conftest import CHAOS_FULL
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.support import BridgeProcess, cloudevent, post_events, read_lines, until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600 if CHAOS_FULL else 180)]

REPLICAS = 3
EVENTS, MAX_SIZE = (6_000, 100) if CHAOS_FULL else (600, 20)
KEYS = ("acme", "globex")
CONFIG = f"""\
version: 1
store: ${{BRIDGE_STORE}}
telemetry: {{logs: {{format: json, level: ERROR}}}}
drain_timeout: 5s
events:
  batch/*: {{schema: none}}
handlers:
  - id: bulk
    on: batch/item
    type: python
    function: tests.apps.batches:take
    batch: {{max_size: {MAX_SIZE}, timeout: 300ms, key: event.data.key}}
"""


async def _scalar(schema: str, sql: str) -> int:
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _ledger(schema: str) -> dict[str, set[str]]:
    """Successful batch id -> the events whose ledger entry names it."""
    conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
    try:
        rows = await conn.fetch("SELECT event_id, result FROM ledger WHERE status = 'succeeded'")
    finally:
        await conn.close()
    out: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        result = row["result"]
        out[orjson.loads(result)["batch"]].add(row["event_id"])
    return out


async def test_each_replica_batches_its_own_events_and_the_ledger_stays_per_event(
    tmp_path: Path, postgres: str
) -> None:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    record = tmp_path / "runs.txt"
    env = {
        "BRIDGE_STORE": f"{POSTGRES_URL}?schema={schema}",
        "BRIDGE_TEST_RECORD": str(record),
        "BATCH_WORK_SECONDS": "0.05",
    }
    procs = []
    for i in range(REPLICAS):
        (tmp_path / f"r{i}").mkdir()
        procs.append(BridgeProcess(config, tmp_path / f"r{i}", env=env))
    events = [
        cloudevent(f"{KEYS[n % 2]}-{n}", "batch/item", {"key": KEYS[n % 2]}, "shop")
        for n in range(EVENTS)
    ]
    try:
        for p in procs:
            p.start()
        await asyncio.gather(*(p.wait_ready(60) for p in procs))
        began = time.monotonic()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            for at in range(0, EVENTS, 100):  # round robin over the replicas
                status, body = await post_events(
                    session, procs[(at // 100) % REPLICAS].url, events[at : at + 100]
                )
                assert status == 202, body

        async def all_done() -> bool:
            return sum(len(v) for v in (await _ledger(schema)).values()) >= EVENTS

        await until(all_done, 120 if CHAOS_FULL else 60, "every event in a batch", watch=procs)
        took = time.monotonic() - began

        async def settled() -> bool:
            return await _scalar(schema, "SELECT COUNT(*) FROM inbox WHERE done_at IS NULL") == 0

        await until(settled, 30, "every inbox entry settled", watch=procs)
        recorded = await _ledger(schema)
        letters = await _scalar(schema, "SELECT COUNT(*) FROM dead_letters")
        codes = await asyncio.gather(*(p.stop() for p in procs))
        assert codes == [0] * REPLICAS, [p.log_tail() for p in procs]
    finally:
        for p in procs:
            p.kill()
        await drop_schema(schema)

    called: dict[str, set[str]] = defaultdict(set)
    pids: dict[str, set[int]] = defaultdict(set)
    for line in parse(read_lines(record)):
        batch = line.what.removeprefix("batch:")
        called[batch].add(line.event_id)
        pids[batch].add(line.pid)
    ids = {e["id"] for e in events}
    # The ledger stays per event: each event in exactly one successful batch, whose
    # entries are exactly the events it was called with; nothing dead-lettered.
    assert sorted(i for members in recorded.values() for i in members) == sorted(ids)
    assert {b: called[b] for b in recorded} == recorded
    assert letters == 0
    # Each batch: at most max_size events, of one key, consumed by one replica.
    assert max(len(m) for m in called.values()) <= MAX_SIZE
    assert all(len({i.split("-")[0] for i in m}) == 1 for m in called.values())
    assert all(len(p) == 1 for p in pids.values())
    # Batches are per process: each key was batched in more than one replica.
    by_key: dict[str, set[int]] = defaultdict(set)
    for batch, members in called.items():
        by_key[next(iter(members)).split("-")[0]] |= pids[batch]
    spread = {k: len(v) for k, v in by_key.items()}
    print(
        f"batch on {REPLICAS} replicas: {EVENTS} events in {len(recorded)} successful batches"
        f" (largest {max(len(m) for m in called.values())}, max_size {MAX_SIZE}) in"
        f" {took:.1f}s; replicas per key {spread};"
        f" events called more than once: {sum(len(m) for m in called.values()) - EVENTS}"
    )
    assert all(len(p) >= 2 for p in by_key.values()), by_key
