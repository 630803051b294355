"""Chaos: fan-out, durable steps, parked retries and joins while ``bridge run`` is SIGKILLed.

Orders come in over the event API. The ``order`` handler reserves stock in a durable step
(``ctx.step``, recording a side effect per execution), then may fail, and on success
emits one ``chaos/item`` per item and a ``chaos/batch`` event that opens a join waiting
for those items. The ``item`` handler charges in a durable step, then may fail. Failures
are drawn from a hash of (handler, event id, attempt) (``tests.apps.orchestration.fate``):
permanent (``Fatal``), short transient (retried inline) or long transient (``RetryAfter``
past ``inline_retry_limit``: parked in the store). Each join's outcome event is handled by
a recorder. Meanwhile the bridge is SIGKILLed (2 times in ``make test``, 6 at full size)
and restarted at once. The store is SQLite; at full size the scenario also runs on
PostgreSQL (the replicas' store, where work a killed process held waits for its lease).

Afterwards, for every branch (handler x event), the ledger holds exactly the outcome the
hash predicts (succeeded or dead-lettered, decided at the predicted attempt number, so
attempt numbers carry on through parked retries and restarts), every predicted dead
letter exists, and every join completed once with all its items.

What "ran twice" can honestly mean with SIGKILL: a handler's success and a step's side
effect happen before the store records them, so a kill between the two repeats the
work in the next process (at-least-once). What must never happen, and is asserted:

- a succeeded branch runs again after its success was committed to the ledger (checked
  against a snapshot of the ledger taken at every kill), or twice within one process;
- a step's side effect runs again after its result was committed (checked against a
  snapshot of the steps table at every kill), or twice within one process (a retried
  attempt gets the kept result).

Repeats inside a kill window are counted in the report (``duplicates``, ``extra``).
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.context import child_event_id
from handlers.join import join_id
from tests.apps.orchestration import expected_outcome, parse
from tests.chaos.report import ChaosReport
from tests.conftest import CHAOS_FULL
from tests.fixtures.postgres import POSTGRES_URL, drop_schema
from tests.support import (
    BridgeProcess,
    cloudevent,
    post_events,
    read_lines,
    recording_bridge,
    until,
)

pytestmark = pytest.mark.chaos

ORDERS = 300 if CHAOS_FULL else 30
KILLS = 6 if CHAOS_FULL else 2
CHILDREN = 3
ATTEMPTS = 4
ORDER_BATCH = 10 if CHAOS_FULL else 5
ORDER_GAP = 0.3 if CHAOS_FULL else 0.5  # seconds between batches: the stream spans the kills
RATES = {
    "ORCH_CHILDREN": str(CHILDREN),
    "ORCH_FAIL_RATE": "0.3",
    "ORCH_PARK_SHARE": "0.4",
    "ORCH_FATAL_RATE": "0.1",
    "ORCH_WORK_SECONDS": "0.1",
}

CONFIG = """\
version: 1
store: ${{BRIDGE_STORE}}
telemetry: {{logs: {{format: json, level: ERROR}}}}
drain_timeout: 5s
defaults:
  inline_retry_limit: 1s
  retry: {{attempts: {attempts}, backoff: fixed, min_delay: 200ms, max_delay: 200ms}}
events:
  chaos/*: {{schema: none}}
handlers:
  - {{id: order, on: chaos/order, type: python, function: "tests.apps.orchestration:chaos_order"}}
  - {{id: item, on: chaos/item, type: python, function: "tests.apps.orchestration:chaos_item"}}
  - id: gather
    type: join
    start: chaos/batch
    on: chaos/item
    match: "event.data.order == start.data.order"
    expect: start.data.count
    member_key: event.data.index
    within: 10m
    emit: chaos/batch-done
  - {{id: outcome, on: chaos/batch-done, type: python, function: "tests.apps.orchestration:record"}}
"""

Branch = tuple[str, str]  # (handler, event id)


def expected_branches(orders: list[str]) -> tuple[dict[Branch, tuple[str, int]], list[str]]:
    """Every branch but the outcome recorder's -> (status, deciding attempt); and the batch
    ids (one join each) of the orders that succeed."""
    out: dict[Branch, tuple[str, int]] = {}
    batches = []
    for order in orders:
        out[("order", order)] = expected_outcome("order", order, ATTEMPTS)
        if out[("order", order)][0] != "succeeded":
            continue
        batch = child_event_id(order, "order", CHILDREN + 1)
        batches.append(batch)
        out[("gather", batch)] = ("succeeded", 1)
        for seq in range(1, CHILDREN + 1):
            item = child_event_id(order, "order", seq)
            out[("item", item)] = expected_outcome("item", item, ATTEMPTS)
            out[("gather", item)] = ("succeeded", 1)
    return out, batches


class StoreView:
    """Reads the bridge's store directly: SQLite, or a PostgreSQL schema."""

    def __init__(self, url: str, db: Path | None = None, schema: str | None = None) -> None:
        self.url = url
        self.db = db
        self.schema = schema

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.db is not None:
            with sqlite3.connect(self.db, timeout=30) as conn:
                return conn.execute(sql).fetchall()
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": self.schema})
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def ledger(self) -> dict[Branch, str]:
        # (handler, event id): the ledger key holds the event's source too; a 'running'
        # row is a replica's claim on a run in progress, not an end.
        rows = await self.query(
            "SELECT handler, event_id, status FROM ledger WHERE status <> 'running'"
        )
        return {(h, k): s for h, k, s in rows}

    async def steps(self) -> set[tuple[str, str, str]]:
        rows = await self.query("SELECT event_id, handler, step FROM steps")
        return {(h, e, s) for e, h, s in rows}

    async def parked(self) -> list[Branch]:
        """(handler, event id) of every parked run."""
        rows = await self.query("SELECT handler, record FROM parked")
        return [(h, orjson.loads(r)["event"]["id"]) for h, r in rows]

    async def count(self, sql: str) -> int:
        return int((await self.query(sql))[0][0])


@pytest.fixture(params=["sqlite", "postgres"] if CHAOS_FULL else ["sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreView]:
    """SQLite always; at full size also PostgreSQL, where a killed process's inbox and
    parked-run leases (30 s) must run out before another process takes its work."""
    if request.param == "sqlite":
        db = tmp_path / "state.db"
        yield StoreView(f"sqlite:///{db}", db=db)
        return
    request.getfixturevalue("postgres")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield StoreView(f"{POSTGRES_URL}?schema={schema}", schema=schema)
    asyncio.run(drop_schema(schema))


def repeats(
    executions: Iterable[tuple[Hashable, int]], committed_at_kill: dict[int, set[Any]]
) -> tuple[list[str], int]:
    """Judge repeated executions of one kind of work.

    Args:
        executions: (what, generation) for every execution.
        committed_at_kill: generation -> what the store had committed when that
            generation's process was killed.

    Returns:
        The violations (a repeat within one process, or after the store committed it) and
        how many repeats fell in a kill window (allowed).
    """
    by_key: dict[Hashable, list[int]] = defaultdict(list)
    for key, generation in executions:
        by_key[key].append(generation)
    violations = []
    allowed = 0
    for key, generations in by_key.items():
        twice = [g for g, n in Counter(generations).items() if n > 1]
        after = [
            g
            for g in generations
            if any(key in committed_at_kill.get(earlier, ()) for earlier in range(1, g))
        ]
        if twice:
            violations.append(f"{key} ran twice in process {twice}")
        elif after:
            violations.append(f"{key} ran in process {after} after it was committed")
        else:
            allowed += len(generations) - 1
    return violations, allowed


async def post_orders(bridge: BridgeProcess, orders: list[str], report: ChaosReport) -> None:
    """Post orders in batches through the kills, each batch until it is answered 202
    (a batch that got no answer may have been stored: the inbox keeps one of each id)."""
    resent = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for i in range(0, len(orders), ORDER_BATCH):
            events = [
                cloudevent(order, "chaos/order", {"order": order}, "chaos")
                for order in orders[i : i + ORDER_BATCH]
            ]
            while True:
                try:
                    status, _ = await post_events(session, bridge.url, events)
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                if status == 202:
                    break
                resent += 1
                await asyncio.sleep(0.2)
            await asyncio.sleep(ORDER_GAP)
    report.extra["batches_resent"] = resent


@pytest.mark.timeout(900 if CHAOS_FULL else 150)
async def test_orchestration_survives_kills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: StoreView
) -> None:
    for name, value in RATES.items():
        monkeypatch.setenv(name, value)  # the expectation uses the bridge's rates
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(attempts=ATTEMPTS))
    bridge, record = recording_bridge(config, tmp_path, "runs.txt", BRIDGE_STORE=store.url, **RATES)
    orders = [f"order-{n:05d}" for n in range(ORDERS)]
    expected, batches = expected_branches(orders)
    scenario = "orchestration_kills" + ("" if store.db is not None else "_postgres")
    report = ChaosReport(scenario, sent=ORDERS)
    rng = random.Random(20261123)
    succeeded_at_kill: dict[int, set[Branch]] = {}
    steps_at_kill: dict[int, set[tuple[str, str, str]]] = {}

    async def finished() -> bool:
        final = await store.ledger()
        return (
            len(final) == len(expected) + len(batches)  # + one outcome recorder run per join
            and await store.parked() == []
            and await store.count("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL") == 0
            and await store.count("SELECT COUNT(*) FROM joins WHERE status = 'open'") == 0
        )

    bridge.start()
    poster: asyncio.Task[None] | None = None
    try:
        await bridge.wait_ready()
        poster = asyncio.create_task(post_orders(bridge, orders, report))
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            generation = bridge.generation
            bridge.kill()
            # What the store had committed when the process died.
            final = await store.ledger()
            succeeded_at_kill[generation] = {b for b, s in final.items() if s == "succeeded"}
            steps_at_kill[generation] = await store.steps()
            report.faults.append(
                f"SIGKILL {generation}: {len(succeeded_at_kill[generation])} branches succeeded,"
                f" {await store.count('SELECT COUNT(*) FROM parked')} parked"
            )
            restarted = time.monotonic()
            bridge.start()
            await bridge.wait_ready(60)
            report.recovery_seconds.append(round(time.monotonic() - restarted, 2))
        await poster
        await until(finished, 600 if CHAOS_FULL else 90, "every branch final, every join closed")
        await asyncio.sleep(2.0)  # scheduler, sweeper and inbox rounds: nothing more happens
        assert await bridge.stop() == 0, bridge.log_tail()
    finally:
        if poster is not None and not poster.done():
            poster.cancel()
        bridge.kill()

    runs = parse(read_lines(record))
    final = await store.ledger()
    dead = Counter(
        (h, e) for h, e in await store.query("SELECT handler, event_id FROM dead_letters")
    )

    # 1. Every branch ended as the hash predicts: succeeded + dead-lettered = expected.
    got = {b: s for b, s in final.items() if b[0] != "outcome"}
    assert got == {b: s for b, (s, _) in expected.items()}
    want_dead = {b for b, (s, _) in expected.items() if s == "dead_lettered"}
    assert set(dead) == want_dead

    # 2. ... decided at the predicted attempt: attempt numbers carry on through parked
    # retries and restarts, and no attempt ran past the deciding one.
    decided: dict[Branch, int] = {}
    for r in runs:
        if r.handler in ("order", "item") and r.what in ("ok", "fatal", "fail", "park"):
            branch = (r.handler, r.event_id)
            decided[branch] = max(decided.get(branch, 0), r.attempt)
    assert decided == {b: a for b, (_, a) in expected.items() if b[0] in ("order", "item")}
    assert {
        (r.handler, r.event_id, r.attempt)
        for r in runs
        if r.what == "ok" and r.handler in ("order", "item")
    } == {(h, e, a) for (h, e), (s, a) in expected.items() if s == "succeeded" and h != "gather"}

    # 3. Every join completed, once, with all its items; its outcome was handled.
    joins = {
        j: (status, n)
        for j, status, n in await store.query(
            "SELECT j.id, j.status, COUNT(m.member_id) FROM joins j"
            " LEFT JOIN join_members m ON m.join_id = j.id GROUP BY j.id, j.status",
        )
    }
    assert joins == {join_id("gather", b): ("completed", CHILDREN) for b in batches}
    outcomes = [r for r in runs if r.handler == "outcome"]
    assert {r.what for r in outcomes} == {f"done:{j}:completed" for j in joins}
    assert len({r.event_id for r in outcomes}) == len(joins)  # one outcome event per join
    outcome_runs = {b for b in final if b[0] == "outcome"}
    assert len(outcome_runs) == len(joins)

    # 4. No succeeded branch ran again once its success was committed, nor twice in a process.
    successes = [
        ((r.handler, r.event_id), r.generation)
        for r in runs
        if r.what == "ok" or r.what.startswith("done:")
    ]
    violations, success_repeats = repeats(successes, succeeded_at_kill)
    assert violations == []

    # 5. No step's side effect ran again once its result was committed, nor twice in a process.
    step_runs = [
        ((r.handler, r.event_id, r.what.removeprefix("step:")), r.generation)
        for r in runs
        if r.what.startswith("step:")
    ]
    violations, step_repeats = repeats(step_runs, steps_at_kill)
    assert violations == []
    want_steps = {("order", o, "reserve") for o in orders} | {
        ("item", e, "charge") for (h, e) in expected if h == "item"
    }
    assert {key for key, _ in step_runs} == want_steps == await store.steps()

    parked_runs = sum(1 for r in runs if r.what == "park")
    report.delivered = len(final)
    report.lost = len(set(expected) - set(final))
    report.duplicates = success_repeats
    report.dead_lettered = len(want_dead)
    report.extra = {
        "branches": len(expected) + len(joins),
        "succeeded": sum(1 for s in final.values() if s == "succeeded"),
        "dead_letter_records": dead.total(),
        "dead_letters_repeated_in_kill_window": dead.total() - len(dead),
        "executions": len(runs),
        "parked_retries": parked_runs,
        "short_retries": sum(1 for r in runs if r.what == "fail"),
        "permanent_failures": sum(1 for r in runs if r.what == "fatal"),
        "steps": len(want_steps),
        "step_side_effects_repeated_in_kill_window": step_repeats,
        "successes_repeated_in_kill_window": success_repeats,
        "joins_completed": len(joins),
        "kills": KILLS,
        "children_per_order": CHILDREN,
        "attempts": ATTEMPTS,
        "rates": {k: float(v) for k, v in RATES.items() if k != "ORCH_CHILDREN"},
        "batches_resent": report.extra.get("batches_resent", 0),
    }
    report.write()
    # The scenario exercised what it claims to.
    assert parked_runs > 0 and dead.total() > 0 and len(joins) > 0
