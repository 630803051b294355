"""``cancel_on``: a matching event cancels the handler's runs for that key that have not
started (pending, parked, sleeping, waiting); on the real dispatcher and a memory store,
the wall clock moved by hand."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from bridge import Context, Event, RetryAfter
from bridge.transport import Settlement
from tests.unit.test_durable_waits import WALL, built, send
from tests.unit.test_orchestration import run_due

HERE = "tests.unit.test_cancel_on"
CALLS: Counter[str] = Counter()
GATE: dict[str, asyncio.Event] = {}


async def parks(event: Event[Any], ctx: Context) -> Any:
    CALLS[f"{event.id}:{ctx.attempt}"] += 1
    if ctx.attempt == 1:
        raise RetryAfter("later", delay=600.0)
    return "ok"


async def sleeps(event: Event[Any], ctx: Context) -> Any:
    CALLS[f"{event.id}:before"] += 1
    await ctx.sleep("nap", "1h")
    CALLS[f"{event.id}:after"] += 1
    return "ok"


async def waits(event: Event[Any], ctx: Context) -> Any:
    CALLS[f"{event.id}:before"] += 1
    paid = await ctx.wait_for_event("pay", "order/paid", timeout="1h")
    CALLS[f"{event.id}:after"] += 1
    return paid is not None


async def gated(event: Event[Any], ctx: Context) -> Any:
    CALLS[event.id] += 1
    gate = GATE.get(event.id)
    if gate is not None:
        await gate.wait()
    return "ok"


def handler(function: str, **extra: str) -> str:
    more = "".join(f"\n  {k}: {v}" for k, v in extra.items())
    return f"""
- id: h
  on: order/placed
  type: python
  function: {HERE}:{function}
  cancel_on: [{{event: order/cancelled, match: event.data.order}}]{more}
"""


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATE.clear()
    WALL[0] = 1_000.0


async def outcome(store: Any, event_id: str) -> tuple[str, Any]:
    entry = (await store.ledger_get([("h", f"t\x1f{event_id}")]))[("h", f"t\x1f{event_id}")]
    return entry.status, entry.result


async def test_a_parked_retry_cancelled_meanwhile_is_woken_ends_cancelled_and_never_runs() -> None:
    runtime, store = built(handler("parks"))
    await send(runtime, "o1", "order/placed", {"order": 1})
    await send(runtime, "o2", "order/placed", {"order": 2})
    WALL[0] = 1_010.0
    assert await send(runtime, "c1", "order/cancelled", {"order": 1}) is Settlement.ACK
    due = {p.event["id"]: p.due_at for p in await store.parked_list()}
    assert due == {"o1": 1_010.0, "o2": 1_600.0}  # o1 woken by its cancellation, o2 not
    assert await run_due(runtime, 1_010.0) == [Settlement.ACK]
    assert CALLS == {"o1:1": 1, "o2:1": 1}  # o1's retry never started
    assert (await outcome(store, "o1"))[0] == "cancelled"
    await runtime.history.flush(everything=True)
    [parked] = await store.history_runs("o2")
    assert (parked.status, parked.due_at) == ("parked", 1_600.0)  # the retry's due time
    WALL[0] = 1_700.0
    assert await run_due(runtime, 1_700.0) == [Settlement.ACK]
    assert CALLS == {"o1:1": 1, "o2:1": 1, "o2:2": 1}
    status, reason = await outcome(store, "o1")
    assert status == "cancelled" and "cancelled by order/cancelled" in reason
    assert (await outcome(store, "o2"))[0] == "succeeded"
    assert await store.parked_list() == [] and await store.dead_letters() == []
    counters = runtime.metrics.counters
    assert counters[("bridge_runs_total", (("handler", "h"), ("outcome", "cancelled")))] == 1
    await runtime.history.flush(everything=True)
    assert [r.status for r in await store.history_runs("o1")] == ["cancelled"]
    assert (await store.history_event("o1")).status == "cancelled"
    # A redelivered message of the cancelled run does not run it again.
    await send(runtime, "o1", "order/placed", {"order": 1})
    assert CALLS["o1:1"] == 1


async def test_a_run_created_after_the_cancellation_runs() -> None:
    runtime, store = built(handler("parks"))
    await send(runtime, "c1", "order/cancelled", {"order": 1})
    WALL[0] = 1_001.0
    await send(runtime, "o1", "order/placed", {"order": 1})
    WALL[0] = 1_700.0
    assert await run_due(runtime, 1_700.0) == [Settlement.ACK]
    assert (await outcome(store, "o1"))[0] == "succeeded"


async def test_a_sleeping_run_cancelled_meanwhile_is_woken_and_never_runs_past_its_sleep() -> None:
    runtime, store = built(handler("sleeps"))
    await send(runtime, "o1", "order/placed", {"order": 1})
    await send(runtime, "o2", "order/placed", {"order": 2})
    WALL[0] = 1_100.0
    await send(runtime, "c1", "order/cancelled", {"order": 1})
    assert await run_due(runtime, 1_100.0) == [Settlement.ACK]  # now, not in an hour
    assert CALLS == {"o1:before": 1, "o2:before": 1}
    assert (await outcome(store, "o1"))[0] == "cancelled"
    assert [p.event["id"] for p in await store.parked_list()] == ["o2"]
    WALL[0] = 4_700.0
    assert await run_due(runtime, 4_700.0) == [Settlement.ACK]
    assert CALLS == {"o1:before": 1, "o2:before": 2, "o2:after": 1}
    assert (await outcome(store, "o2"))[0] == "succeeded"


async def gated_then_parks(event: Event[Any], ctx: Context) -> Any:
    CALLS[f"{event.id}:{ctx.attempt}"] += 1
    if ctx.attempt == 1:
        await GATE[event.id].wait()
        raise RetryAfter("later", delay=600.0)
    return "ok"


async def test_a_run_that_parks_just_after_its_cancellation_is_due_at_once() -> None:
    runtime, store = built(handler("gated_then_parks"))
    GATE["o1"] = asyncio.Event()
    running = asyncio.create_task(send(runtime, "o1", "order/placed", {"order": 1}))
    while CALLS["o1:1"] == 0:
        await asyncio.sleep(0)
    WALL[0] = 1_005.0
    await send(runtime, "c1", "order/cancelled", {"order": 1})  # finds no parked run yet
    GATE["o1"].set()
    assert await running is Settlement.ACK
    assert [p.due_at for p in await store.parked_list()] == [1_005.0]  # not 1_605
    assert await run_due(runtime, 1_005.0) == [Settlement.ACK]
    assert CALLS == {"o1:1": 1}
    assert (await outcome(store, "o1"))[0] == "cancelled"


async def test_a_waiting_run_is_woken_and_cancelled_and_its_wait_closed() -> None:
    runtime, store = built(handler("waits", waits="[{event: order/paid}]"))
    await send(runtime, "o1", "order/placed", {"order": 1})
    await send(runtime, "o2", "order/placed", {"order": 2})
    WALL[0] = 1_005.0
    await send(runtime, "c2", "order/cancelled", {"order": 2})
    due = {p.event["id"]: p.due_at for p in await store.parked_list()}
    assert due == {"o1": 4_600.0, "o2": 1_005.0}  # woken now, not at its timeout
    assert await run_due(runtime, 1_005.0) == [Settlement.ACK]
    assert (await outcome(store, "o2"))[0] == "cancelled"
    assert [j.start["run_event"] for j in await store.join_open_list("h/waits")] == ["o1"]
    assert CALLS == {"o1:before": 1, "o2:before": 1}


async def test_a_run_pending_for_a_concurrency_slot_is_cancelled_before_it_starts() -> None:
    runtime, store = built(handler("gated", concurrency="1"))
    GATE["o1"] = asyncio.Event()
    first = asyncio.create_task(send(runtime, "o1", "order/placed", {"order": 1}))
    second = asyncio.create_task(send(runtime, "o2", "order/placed", {"order": 2}))
    while CALLS["o1"] == 0:
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)  # o2 now waits for the slot o1 holds
    assert CALLS == {"o1": 1}
    await send(runtime, "c2", "order/cancelled", {"order": 2})
    GATE["o1"].set()
    assert await asyncio.gather(first, second) == [Settlement.ACK, Settlement.ACK]
    assert CALLS == {"o1": 1}
    assert (await outcome(store, "o2"))[0] == "cancelled"
    assert (await outcome(store, "o1"))[0] == "succeeded"


async def test_a_cancel_event_without_the_key_cancels_nothing() -> None:
    runtime, store = built(handler("parks"))
    await send(runtime, "o1", "order/placed", {"order": 1})
    await send(runtime, "c0", "order/cancelled", {"note": "no order field"})
    WALL[0] = 1_700.0
    await run_due(runtime, 1_700.0)
    assert (await outcome(store, "o1"))[0] == "succeeded"
