"""The admission controls through the dispatcher, on the memory store and a clock moved by
hand: throttle, skipping rate limit, debounce, singleton, idempotency and priority."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import orjson

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.clock import ManualClock
from bridge.store import MemoryStore
from bridge.transport import Delivery, Settlement
from tests.unit.test_dispatch import HEAD, delivery, make, process

CLOCK: list[ManualClock] = []
STARTS: list[tuple[float, str, Any]] = []
ENDS: list[tuple[float, str]] = []
GATE: list[asyncio.Event] = []


async def record(event: Event[Any], ctx: Context) -> str:
    STARTS.append((CLOCK[0].time(), event.id, event.data.get("k")))
    return event.id


async def blocked(event: Event[Any], ctx: Context) -> str:
    STARTS.append((CLOCK[0].time(), event.id, event.data.get("k")))
    await GATE[0].wait()
    ENDS.append((CLOCK[0].time(), event.id))
    return event.id


def setup(handler: str) -> tuple[Runtime, Any, ManualClock]:
    clock = ManualClock(1000.0)
    CLOCK[:] = [clock]
    STARTS.clear()
    ENDS.clear()
    GATE[:] = [asyncio.Event()]
    runtime, store, _ = make(handler, clock)  # type: ignore[arg-type]
    assert runtime.dispatcher is not None
    runtime.dispatcher.wall = clock.time
    return runtime, store, clock


def send(runtime: Runtime, event_id: str, data: dict[str, Any]) -> asyncio.Future[Settlement]:
    return asyncio.ensure_future(process(runtime, delivery(event_id, data)[0]))


def outcomes(runtime: Runtime, handler: str = "h") -> dict[str, float]:
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in runtime.metrics.counters.items()
        if name == "bridge_runs_total" and dict(labels).get("handler") == handler and value
    }


async def test_throttle_spaces_starts_per_key_in_order_and_drops_none() -> None:
    runtime, _, clock = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:record
          throttle: {limit: 2, period: 1s, burst: 1, key: "event.data.k"}
        """
    )
    sent = [send(runtime, f"a{i}", {"k": "a"}) for i in range(6)]
    sent.append(send(runtime, "b0", {"k": "b"}))
    await clock.advance(10)
    assert [s.result() for s in sent] == [Settlement.ACK] * 7
    a = [(t - 1000.0, e) for t, e, k in STARTS if k == "a"]
    # Two at once (limit plus burst 1 in GCRA's terms), then one every half second, in order.
    assert a == [(0.0, "a0"), (0.0, "a1"), (0.5, "a2"), (1.0, "a3"), (1.5, "a4"), (2.0, "a5")]
    assert [(t - 1000.0, e) for t, e, k in STARTS if k == "b"] == [(0.0, "b0")]
    assert outcomes(runtime) == {"succeeded": 7}


async def test_a_skipping_rate_limit_skips_and_counts_the_excess() -> None:
    runtime, _, clock = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:record
          rate_limit: {count: 2, per: 1m, mode: skip}
        """
    )
    first = [send(runtime, f"e{i}", {"k": 1}) for i in range(5)]
    await clock.advance(1)
    assert [s.result() for s in first] == [Settlement.ACK] * 5
    assert [e for _, e, _ in STARTS] == ["e0", "e1"]
    assert outcomes(runtime) == {"succeeded": 2, "skipped": 3}
    await clock.advance(60)
    later = send(runtime, "e9", {"k": 1})
    await clock.advance(1)
    assert later.result() is Settlement.ACK and STARTS[-1][1] == "e9"


async def test_debounce_runs_once_per_key_with_the_last_event_after_quiet() -> None:
    runtime, _, clock = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:record
          debounce: {period: 5s, key: "event.data.k"}
        """
    )
    sent = [send(runtime, "a1", {"k": "a"}), send(runtime, "b1", {"k": "b"})]
    await clock.advance(2)
    sent.append(send(runtime, "a2", {"k": "a"}))
    await clock.advance(2)
    sent.append(send(runtime, "a3", {"k": "a"}))
    await clock.advance(4)
    assert [(t - 1000.0, e) for t, e, _ in STARTS] == [(5.0, "b1")]
    await clock.advance(2)
    assert [(t - 1000.0, e) for t, e, _ in STARTS] == [(5.0, "b1"), (9.0, "a3")]
    assert [s.result() for s in sent] == [Settlement.ACK] * 4  # superseded ones settled too
    assert outcomes(runtime) == {"succeeded": 2, "debounced": 2}


async def test_debounce_timeout_fires_with_the_latest_event_while_events_keep_coming() -> None:
    runtime, _, clock = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:record
          debounce: {period: 2s, timeout: 5s}
        """
    )
    sent = []
    for i in range(8):
        sent.append(send(runtime, f"e{i}", {"k": 1}))
        await clock.advance(1)
    await clock.advance(5)
    # e0 at t=0 opens the window; the timeout fires at t=5 with the latest then (e4);
    # e5 (t=5), e6 and e7 open a new window that fires 2 s after e7.
    assert [(t - 1000.0, e) for t, e, _ in STARTS] == [(5.0, "e4"), (9.0, "e7")]
    assert all(s.done() for s in sent)
    assert outcomes(runtime) == {"succeeded": 2, "debounced": 6}


async def test_singleton_skip_refuses_a_second_run_of_a_running_key() -> None:
    runtime, _, clock = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:blocked
          singleton: {key: "event.data.k", mode: skip}
        """
    )
    first = send(runtime, "a1", {"k": "a"})
    await clock.settle()
    second = send(runtime, "a2", {"k": "a"})
    other = send(runtime, "b1", {"k": "b"})
    await clock.settle()
    assert second.done() and second.result() is Settlement.ACK
    assert [e for _, e, _ in STARTS] == ["a1", "b1"]
    GATE[0].set()
    await asyncio.gather(first, other)
    assert outcomes(runtime) == {"succeeded": 2, "skipped": 1}
    third = send(runtime, "a3", {"k": "a"})  # the key is free again
    assert await third is Settlement.ACK and STARTS[-1][1] == "a3"


async def test_singleton_cancel_cancels_the_running_run_and_starts_the_new_one() -> None:
    runtime, store, clock = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:blocked
          singleton: {key: "event.data.k", mode: cancel}
        """
    )
    first = send(runtime, "a1", {"k": "a"})
    await clock.settle()
    second = send(runtime, "a2", {"k": "a"})
    await clock.settle()
    assert first.done() and first.result() is Settlement.ACK  # final: cancelled
    assert [e for _, e, _ in STARTS] == ["a1", "a2"]
    GATE[0].set()
    assert await second is Settlement.ACK
    assert ENDS and [e for _, e in ENDS] == ["a2"]  # a1 never finished
    assert outcomes(runtime) == {"succeeded": 1, "cancelled": 1}
    assert [entry.event_id for entry in store.ledger.values()] == ["a2"]


async def test_idempotency_runs_one_event_per_key_per_ttl() -> None:
    runtime, _, clock = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:record
          idempotency: {key: "event.data.k", ttl: 1h}
        """
    )
    for i in range(3):
        assert await send(runtime, f"e{i}", {"k": "order-1"}) is Settlement.ACK
    assert await send(runtime, "x", {"k": "order-2"}) is Settlement.ACK
    assert [e for _, e, _ in STARTS] == ["e0", "x"]
    assert outcomes(runtime) == {"succeeded": 2, "skipped": 2}
    await clock.advance(3600)
    assert await send(runtime, "e9", {"k": "order-1"}) is Settlement.ACK
    assert STARTS[-1][1] == "e9"


async def test_priority_orders_runs_waiting_for_a_concurrency_slot() -> None:
    runtime, _, clock = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:blocked
          concurrency: 1
          priority: {run: "event.data.p"}
        """
    )
    holder = send(runtime, "first", {"p": 0})
    await clock.settle()
    waiting = [send(runtime, f"p{p}-{i}", {"p": p}) for i, p in enumerate((1, 5, 3, 5))]
    await clock.settle()
    assert [e for _, e, _ in STARTS] == ["first"]
    GATE[0].set()
    await asyncio.gather(holder, *waiting)
    # Higher first; equal priorities in arrival order.
    assert [e for _, e, _ in STARTS] == ["first", "p5-1", "p5-3", "p3-2", "p1-0"]


def replicas(handler: str, count: int = 2) -> tuple[list[Runtime], ManualClock]:
    """``count`` runtimes on one memory store that says it is shared, as replicas on
    PostgreSQL are: the flow state they share is the only thing between them."""
    clock = ManualClock(1000.0)
    CLOCK[:] = [clock]
    STARTS.clear()
    ENDS.clear()
    GATE[:] = [asyncio.Event()]
    store = MemoryStore()
    store.shared = True
    cfg = load_config_text(
        "ledger: false\n" + HEAD + textwrap.indent(textwrap.dedent(handler), "  "), {}
    )
    out = []
    for _ in range(count):
        runtime = Runtime(cfg, store=store, clock=clock)
        runtime.build()
        assert runtime.dispatcher is not None
        runtime.dispatcher.wall = clock.time
        out.append(runtime)
    return out, clock


async def test_a_concurrency_key_holds_across_replicas_sharing_the_store() -> None:
    (one, two), clock = replicas(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:blocked
          concurrency_key: "{data.k}"
        """
    )
    first = send(one, "a1", {"k": "a"})
    await clock.settle()
    second = send(two, "a2", {"k": "a"})
    other = send(two, "b1", {"k": "b"})
    await clock.advance(5)
    assert [e for _, e, _ in STARTS] == ["a1", "b1"]  # a2 waits for a1, in the other replica
    GATE[0].set()
    await clock.advance(2)
    assert [s.result() for s in (first, second, other)] == [Settlement.ACK] * 3
    assert [e for _, e, _ in STARTS] == ["a1", "b1", "a2"]


async def test_a_singleton_and_a_throttle_hold_across_replicas_sharing_the_store() -> None:
    (one, two), clock = replicas(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:blocked
          singleton: {key: "event.data.k", mode: skip}
        - id: t
          on: test/other
          type: python
          function: tests.unit.test_flow_controls:record
          throttle: {limit: 1, period: 1s}
        """
    )
    first = send(one, "a1", {"k": "a"})
    await clock.settle()
    second = send(two, "a2", {"k": "a"})
    await clock.settle()
    assert second.done() and outcomes(two) == {"skipped": 1}
    GATE[0].set()
    await first
    STARTS.clear()
    sent = [
        asyncio.ensure_future(process(r, delivery(f"t{i}", {}, "test/other")[0]))
        for i, r in enumerate([one, two, one, two])
    ]
    await clock.advance(5)
    assert all(s.done() for s in sent)
    assert sorted(t - clock.time() + 5 for t, _, _ in STARTS) == [0.0, 1.0, 2.0, 3.0]


FAILED_ONCE: set[str] = set()


async def fails_once(event: Event[Any], ctx: Context) -> str:
    STARTS.append((CLOCK[0].time(), event.id, ctx.attempt))
    if event.id not in FAILED_ONCE:
        FAILED_ONCE.add(event.id)
        raise RuntimeError("first attempt fails")
    return event.id


async def test_a_retry_budget_holds_across_replicas_sharing_the_store() -> None:
    FAILED_ONCE.clear()
    (one, two), clock = replicas(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:fails_once
          retry_budget: {ratio: 0, window: 10s, min_per_second: 0}
        """
    )
    sent = [send(one, "e1", {}), send(two, "e2", {})]
    await clock.advance(30)
    assert [s.result() for s in sent] == [Settlement.ACK] * 2
    retries = sorted(t - 1000.0 for t, _, attempt in STARTS if attempt == 2)
    # The first retry goes after its 1 s backoff; the other replica's waits until that
    # retry's slice has left the shared window, as one process's would.
    assert retries[0] == 1.0 and retries[1] >= 11.0


async def test_the_run_history_shows_waiting_and_refused_runs_with_reason_and_due_time() -> None:
    clock = ManualClock(1000.0)
    CLOCK[:] = [clock]
    STARTS.clear()
    runtime, store, _ = make(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:record
          debounce: {period: 5s}
        """,
        clock,  # type: ignore[arg-type]
        history="{enabled: true}",
    )
    assert runtime.dispatcher is not None and runtime.history is not None
    runtime.dispatcher.wall = clock.time
    first = send(runtime, "e1", {})
    await clock.advance(1)
    await runtime.history.flush(everything=True)
    (waiting,) = await store.history_runs("e1")
    assert (waiting.status, waiting.due_at) == ("debouncing", 1005.0)
    assert (await store.history_event("e1")).status == "running"
    second = send(runtime, "e2", {})
    await clock.advance(10)
    assert [first.result(), second.result()] == [Settlement.ACK] * 2
    await runtime.history.flush(everything=True)
    (superseded,) = await store.history_runs("e1")
    assert superseded.status == "debounced" and "superseded" in (superseded.error or "")
    assert [r.status for r in await store.history_runs("e2")] == ["succeeded"]


def timed_delivery(event_id: str, time: str) -> Delivery:
    body = orjson.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "t",
            "type": "test/event",
            "time": time,
            "data": {},
        }
    )

    async def settle(outcome: Settlement) -> None:
        return None

    return Delivery(body, {}, {}, settle, "test")


async def test_debounce_keeps_the_event_of_the_latest_time_whatever_the_arrival_order() -> None:
    runtime, _, clock = setup(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_controls:record
          debounce: {period: 5s}
        """
    )
    # The later event reaches the bridge first (another replica's inbox batch, a retry).
    late = asyncio.ensure_future(process(runtime, timed_delivery("late", "2026-01-01T00:00:02Z")))
    await clock.advance(1)
    early = asyncio.ensure_future(process(runtime, timed_delivery("early", "2026-01-01T00:00:01Z")))
    await clock.advance(10)
    assert [late.result(), early.result()] == [Settlement.ACK] * 2
    assert [e for _, e, _ in STARTS] == ["late"]
    assert outcomes(runtime) == {"succeeded": 1, "debounced": 1}
