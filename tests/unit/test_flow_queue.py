"""Runs queued in the store by the admission step (a throttle's start time or a debounce's
quiet period beyond the inline limit), and parked retries passing admission again: the
real dispatcher on the memory store, a clock moved by hand, the parked runs claimed and
delivered as the scheduler's ``ParkedSource`` delivers them."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.clock import ManualClock
from bridge.scheduler import ParkedSource
from bridge.store import MemoryStore, SqliteStore
from bridge.store.contracts import ParkedRun
from bridge.transport import Settlement
from tests.unit.test_dispatch import delivery, process

CLOCK: list[ManualClock] = []
STARTS: list[tuple[float, str]] = []
ENDS: list[tuple[float, str]] = []
FAILED: set[str] = set()

HEAD = """\
version: 1
store: memory://
server: {enabled: false}
defaults:
  retry: {attempts: 3, backoff: fixed, min_delay: 40s, max_delay: 40s, jitter: 0}
  timeout: 5s
  inline_retry_limit: 3s
handlers:
"""


async def record(event: Event[Any], ctx: Context) -> str:
    STARTS.append((CLOCK[0].time() - 1000.0, event.id))
    return event.id


async def slow_once(event: Event[Any], ctx: Context) -> str:
    """Fails the first attempt of ``r*`` events; every run lasts 10 s."""
    STARTS.append((CLOCK[0].time() - 1000.0, event.id))
    await CLOCK[0].sleep(10)
    ENDS.append((CLOCK[0].time() - 1000.0, event.id))
    if event.id.startswith("r") and event.id not in FAILED:
        FAILED.add(event.id)
        raise RuntimeError("try later")
    return event.id


def setup(handler: str) -> tuple[Runtime, MemoryStore, ManualClock, ParkedSource]:
    clock = ManualClock(1000.0)
    CLOCK[:] = [clock]
    STARTS.clear()
    ENDS.clear()
    FAILED.clear()
    cfg = load_config_text(HEAD + textwrap.indent(textwrap.dedent(handler), "  "), {})
    store = MemoryStore()
    runtime = Runtime(cfg, store=store, clock=clock)
    runtime.build()
    assert runtime.dispatcher is not None
    runtime.dispatcher.wall = clock.time
    return runtime, store, clock, ParkedSource(store, wall=clock.time)


def send(runtime: Runtime, event_id: str, data: dict[str, Any]) -> asyncio.Future[Settlement]:
    return asyncio.ensure_future(process(runtime, delivery(event_id, data)[0]))


async def settle_loop() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def scheduler(
    runtime: Runtime, store: MemoryStore, clock: ManualClock, source: ParkedSource, seconds: float
) -> list[asyncio.Future[Settlement]]:
    """Move the clock by ``seconds`` in steps of 0.5 s, claiming and running due runs."""
    resumed = []
    for _ in range(int(seconds * 2)):
        await clock.advance(0.5)
        for run in await store.parked_claim(clock.time(), 100, 30.0, "s"):
            resumed.append(asyncio.ensure_future(process(runtime, source._delivery(run))))
        await settle_loop()
    return resumed


def counter(runtime: Runtime, name: str, **labels: str) -> float:
    return sum(
        value
        for (metric, got), value in runtime.metrics.counters.items()
        if metric == name and all(dict(got).get(k) == v for k, v in labels.items())
    )


async def test_throttled_runs_past_the_inline_limit_are_queued_settled_and_run_in_order() -> None:
    runtime, store, clock, source = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_queue:record
          throttle: {limit: 1, period: 1s, burst: 0, key: "event.data.k"}
        """
    )
    sent = [send(runtime, f"a{i}", {"k": "a"}) for i in range(8)]
    await settle_loop()
    # Start times 0..7 s: those more than 3 s away (the inline limit) are parked and their
    # messages settled at once; the nearer ones wait in process.
    assert [s.done() for s in sent] == [True] + [False] * 3 + [True] * 4
    assert all(s.result() is Settlement.ACK for s in sent[4:])
    parked = sorted(store.parked.values(), key=lambda p: p[0].due_at)
    assert [(p[0].event["id"], p[0].admission) for p in parked] == [
        (f"a{i}", {"stage": "throttle", "at": 1000.0 + i}) for i in range(4, 8)
    ]
    assert counter(runtime, "bridge_runs_queued_total", handler="h") == 4
    resumed = await scheduler(runtime, store, clock, source, 10)
    assert all(s.result() is Settlement.ACK for s in [*sent, *resumed])
    # Each run once, at its own start time, in order: the queue keeps the throttle.
    expected = [(float(i), f"a{i}") for i in range(8)]
    assert expected == STARTS
    assert store.parked == {}
    assert counter(runtime, "bridge_runs_total", handler="h", outcome="succeeded") == 8


async def test_a_queued_debounced_run_is_superseded_or_fires_from_the_store() -> None:
    runtime, store, clock, source = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_queue:record
          debounce: {period: 10s, key: "event.data.k"}
        """
    )
    first = send(runtime, "a1", {"k": "a"})
    await settle_loop()
    assert first.done() and first.result() is Settlement.ACK  # queued, settled
    resumed = await scheduler(runtime, store, clock, source, 4)
    second = send(runtime, "a2", {"k": "a"})
    await settle_loop()
    assert second.done() and second.result() is Settlement.ACK
    resumed += await scheduler(runtime, store, clock, source, 16)
    assert all(s.result() is Settlement.ACK for s in resumed)
    assert STARTS == [(14.0, "a2")]  # once, with the last event, a quiet period after it
    assert counter(runtime, "bridge_runs_total", handler="h", outcome="debounced") == 1
    assert store.parked == {}


async def test_a_parked_retry_waits_for_its_singleton_key_instead_of_overlapping() -> None:
    runtime, store, clock, source = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_queue:slow_once
          singleton: {key: "event.data.k", mode: skip}
        """
    )
    first = send(runtime, "r1", {"k": "a"})
    await clock.advance(10)  # r1 fails after 10 s; its retry is parked, due at 50 s
    await settle_loop()
    assert first.result() is Settlement.ACK and len(store.parked) == 1
    resumed = await scheduler(runtime, store, clock, source, 35)
    other = send(runtime, "b1", {"k": "a"})  # 45 s: runs until 55 s, over the retry's due
    await settle_loop()
    resumed += await scheduler(runtime, store, clock, source, 30)
    assert other.result() is Settlement.ACK
    assert all(s.result() is Settlement.ACK for s in resumed)
    # The retry, due at 50 s, waits (polling) for b1 to let go of the key at 55 s.
    assert [e for _, e in STARTS] == ["r1", "b1", "r1"] and STARTS[1][0] == 45.0
    assert ENDS[:2] == [(10.0, "r1"), (55.0, "b1")]
    assert 55.0 <= STARTS[2][0] < 56.0
    assert counter(runtime, "bridge_runs_total", handler="h", outcome="succeeded") == 2
    assert store.parked == {}


async def test_a_parked_retry_takes_a_throttle_start_time() -> None:
    runtime, store, clock, source = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_queue:slow_once
          throttle: {limit: 1, period: 2s, burst: 0}
        """
    )
    first = send(runtime, "r1", {"k": "a"})
    await clock.advance(10)
    await settle_loop()
    assert first.result() is Settlement.ACK and len(store.parked) == 1  # due at 50 s
    resumed = await scheduler(runtime, store, clock, source, 39.5)
    # 49.5 s: two runs take the next start times (49.5 s, 51.5 s); the retry, due at 50 s,
    # gets the one after (53.5 s), not a start of its own beside them.
    others = [send(runtime, f"b{i}", {"k": "a"}) for i in range(2)]
    resumed += await scheduler(runtime, store, clock, source, 30)
    assert all(s.result() is Settlement.ACK for s in [*others, *resumed])
    assert sorted(STARTS) == [(0.0, "r1"), (49.5, "b0"), (51.5, "b1"), (53.5, "r1")]
    assert store.parked == {}


async def test_due_parked_runs_are_claimed_highest_priority_first() -> None:
    runtime, store, clock, _ = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_queue:record
          throttle: {limit: 1, period: 1s, burst: 0}
          priority: {run: "event.data.p"}
        """
    )
    sent = [send(runtime, f"e{i}", {"p": i % 3}) for i in range(10)]
    await settle_loop()
    assert sum(s.done() for s in sent) == 7  # e0 ran; e4..e9 queued
    assert {p[0].event["id"]: p[0].priority for p in store.parked.values()} == {
        f"e{i}": i % 3 for i in range(4, 10)
    }
    await clock.advance(20)  # all due: one claim of 3 takes the highest priorities
    claimed = await store.parked_claim(clock.time(), 3, 30.0, "s")
    assert [(r.event["id"], r.priority) for r in claimed] == [("e5", 2), ("e8", 2), ("e4", 1)]


async def claim_order(store: Any) -> list[str]:
    """Put five due runs of priorities 0..2; claim three: the highest first, then by due time."""
    runs = [
        ParkedRun(f"p{i}", "h", {"id": f"e{i}"}, "c", 1, 100.0 + i, priority=p)
        for i, p in enumerate([0, 2, 1, 2, 0])
    ]
    await store.parked_put(runs)
    claimed = await store.parked_claim(200.0, 3, 30.0, "s")
    return [r.id for r in claimed]


async def test_sqlite_claims_due_parked_runs_highest_priority_first(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'q.db'}")
    await store.open()
    try:
        assert await claim_order(store) == ["p1", "p3", "p2"]
    finally:
        await store.close()


async def test_memory_claims_due_parked_runs_highest_priority_first() -> None:
    assert await claim_order(MemoryStore()) == ["p1", "p3", "p2"]
