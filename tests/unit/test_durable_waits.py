"""Durable sleeps and waits in python handlers (``ctx.sleep``, ``ctx.wait_for_event``), on the
real dispatcher and a memory store, with the wall clock moved by hand."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bridge import Context, Event
from bridge.transport import Settlement
from tests.unit.test_dispatch import FakeClock, delivery, make, process
from tests.unit.test_orchestration import inbox_normalizer, run_due

HERE = "tests.unit.test_durable_waits"
EFFECTS: Counter[str] = Counter()
WALL = [1_000.0]


def effect(name: str) -> str:
    EFFECTS[name] += 1
    return name


async def sleeper(event: Event[Any], ctx: Context) -> Any:
    await ctx.step("before", effect, f"{event.id}:before")
    await ctx.sleep("nap", "2h")
    await ctx.step("after", effect, f"{event.id}:after")
    return {"attempt": ctx.attempt}


async def waiter(event: Event[Any], ctx: Context) -> Any:
    await ctx.step("before", effect, f"{event.id}:before")
    paid = await ctx.wait_for_event(
        "payment", "order/paid", match="async.data.order == event.data.order", timeout="1h"
    )
    EFFECTS[f"{event.id}:woke"] += 1
    return {"paid": paid.id if paid is not None else None}


async def undeclared(event: Event[Any], ctx: Context) -> Any:
    return await ctx.wait_for_event("w", "not/declared", timeout=10)


WAITER = f"""
- id: checkout
  on: order/placed
  type: python
  function: {HERE}:waiter
  waits: [{{event: order/paid, buffer: 10m}}]
"""


@pytest.fixture(autouse=True)
def _reset() -> None:
    EFFECTS.clear()
    WALL[0] = 1_000.0


def built(handlers: str) -> tuple[Any, Any]:
    runtime, store, _ = make(handlers, FakeClock(), history="{enabled: true}")
    runtime.dispatcher.wall = lambda: WALL[0]
    for bound in runtime.handlers.values():  # the companions (waits, cancel_on)
        if bound.id.endswith(("/waits", "/cancel")):
            bound.handler.wall = lambda: WALL[0]
    return runtime, store


async def send(runtime: Any, event_id: str, event_type: str, data: Any) -> Settlement:
    d, _ = delivery(event_id, data, event_type)
    return await runtime.dispatcher.process(d, inbox_normalizer(runtime))


async def test_a_sleep_parks_the_run_settles_its_message_and_resumes_once_when_due() -> None:
    runtime, store = built(f"- {{id: nap, on: test/event, type: python, function: {HERE}:sleeper}}")
    assert await process(runtime, delivery("e1")[0]) is Settlement.ACK
    [parked] = await store.parked_list()
    assert (parked.handler, parked.attempt, parked.due_at) == ("nap", 1, 1_000.0 + 7_200)
    assert parked.attempts == []  # a sleep is no failed attempt
    await runtime.history.flush(everything=True)
    [record] = await store.history_runs("e1")
    assert record.status == "sleeping" and "sleeping until" in (record.error or "")
    assert record.due_at == 8_200.0  # structured, as the UI shows it
    assert (await store.history_event("e1")).status == "running"
    assert await store.ledger_final([("nap", "t\x1fe1")]) == {}
    # A redelivered message while the run sleeps neither re-runs the step nor wakes it.
    assert await process(runtime, delivery("e1")[0]) is Settlement.ACK
    assert [p.due_at for p in await store.parked_list()] == [8_200.0]

    assert await run_due(runtime, 8_199.0) == []
    WALL[0] = 8_201.0
    assert await run_due(runtime, 8_201.0) == [Settlement.ACK]
    assert EFFECTS == {"e1:before": 1, "e1:after": 1}
    entry = (await store.ledger_get([("nap", "t\x1fe1")]))[("nap", "t\x1fe1")]
    assert (entry.status, entry.result) == ("succeeded", {"attempt": 1})
    assert await store.parked_list() == []
    # Parked twice: by the first delivery and by the redelivery (to the same due time).
    assert (
        runtime.metrics.counters[
            ("bridge_runs_suspended_total", (("handler", "nap"), ("kind", "sleeping")))
        ]
        == 2
    )
    assert await run_due(runtime, 99_999.0) == []  # resumed once


async def test_a_wait_wakes_its_run_when_the_matching_event_comes() -> None:
    runtime, store = built(WAITER)
    assert await send(runtime, "o1", "order/placed", {"order": 1}) is Settlement.ACK
    assert await send(runtime, "o2", "order/placed", {"order": 2}) is Settlement.ACK
    await runtime.history.flush(everything=True)
    assert [(r.status, r.due_at) for r in await store.history_runs("o1")] == [("waiting", 4_600.0)]
    due = {p.event["id"]: p.due_at for p in await store.parked_list()}
    assert due == {"o1": 4_600.0, "o2": 4_600.0}  # the timeout, unless an event comes

    WALL[0] = 1_010.0
    assert await send(runtime, "pay-2", "order/paid", {"order": 2}) is Settlement.ACK
    due = {p.event["id"]: p.due_at for p in await store.parked_list()}
    assert due == {"o1": 4_600.0, "o2": 1_010.0}  # only the matching run is woken
    assert await run_due(runtime, 1_011.0) == [Settlement.ACK]
    entry = await store.ledger_get([("checkout", "t\x1fo2")])
    assert entry[("checkout", "t\x1fo2")].result == {"paid": "pay-2"}
    assert EFFECTS == {"o1:before": 1, "o2:before": 1, "o2:woke": 1}
    # The collector's run of the payment is in the ledger like any run.
    assert await store.ledger_final([("checkout/waits", "t\x1fpay-2")]) == {
        ("checkout/waits", "t\x1fpay-2"): "succeeded"
    }


async def test_a_wait_that_opens_after_its_event_came_still_gets_it() -> None:
    runtime, store = built(WAITER)
    assert await send(runtime, "pay-7", "order/paid", {"order": 7}) is Settlement.ACK
    WALL[0] = 1_300.0  # five minutes later, within the 10m buffer
    assert await send(runtime, "o7", "order/placed", {"order": 7}) is Settlement.ACK
    assert await store.parked_list() == []  # never parked: the event was there
    entry = await store.ledger_get([("checkout", "t\x1fo7")])
    assert entry[("checkout", "t\x1fo7")].result == {"paid": "pay-7"}
    # Taken once: a second run waiting for the same order does not get it again.
    assert await send(runtime, "o7b", "order/placed", {"order": 7}) is Settlement.ACK
    assert [p.event["id"] for p in await store.parked_list()] == ["o7b"]


async def test_a_wait_returns_none_at_its_timeout_and_a_late_event_changes_nothing() -> None:
    runtime, store = built(WAITER)
    await send(runtime, "o3", "order/placed", {"order": 3})
    await send(runtime, "pay-x", "order/paid", {"order": 99})  # matches nothing
    WALL[0] = 4_601.0
    assert await run_due(runtime, 4_601.0) == [Settlement.ACK]
    entry = await store.ledger_get([("checkout", "t\x1fo3")])
    assert entry[("checkout", "t\x1fo3")].result == {"paid": None}
    await send(runtime, "pay-3", "order/paid", {"order": 3})  # too late
    assert await store.parked_list() == []
    assert EFFECTS["o3:woke"] == 1


async def test_an_event_that_comes_while_the_run_parks_still_wakes_it() -> None:
    runtime, store = built(WAITER)
    real_put = store.parked_put
    raced: list[Settlement] = []

    async def put_after_the_payment(runs: Any) -> None:
        # The payment is handled after the wait opened but before the run is parked:
        # its wake finds no parked run.
        if not raced:
            raced.append(await send(runtime, "pay-4", "order/paid", {"order": 4}))
            assert await store.parked_list() == []
        await real_put(runs)

    store.parked_put = put_after_the_payment
    await send(runtime, "o4", "order/placed", {"order": 4})
    assert raced == [Settlement.ACK]
    assert [(p.event["id"], p.due_at) for p in await store.parked_list()] == [("o4", 1_000.0)]
    assert await run_due(runtime, 1_000.0) == [Settlement.ACK]
    entry = await store.ledger_get([("checkout", "t\x1fo4")])
    assert entry[("checkout", "t\x1fo4")].result == {"paid": "pay-4"}


async def test_waiting_for_an_undeclared_type_dead_letters_the_run() -> None:
    runtime, store = built(
        f"- {{id: u, on: test/event, type: python, function: {HERE}:undeclared}}"
    )
    await process(runtime, delivery("e1")[0])
    [letter] = await store.dead_letters()
    assert "not declared under its `waits`" in letter.reason


def sync_sleeper(event: Event[Any], ctx: Context) -> Any:
    EFFECTS[f"{event.id}:called"] += 1
    ctx.sleep("nap", "1h")  # a sync function cannot await it
    EFFECTS[f"{event.id}:past"] += 1
    return "slept?"


async def test_a_sync_function_that_sleeps_is_dead_lettered_with_a_reason_that_says_why() -> None:
    runtime, store = built(
        f"- {{id: s, on: test/event, type: python, function: {HERE}:sync_sleeper}}"
    )
    assert await process(runtime, delivery("e1")[0]) is Settlement.ACK
    [letter] = await store.dead_letters()
    assert letter.handler == "s" and len(letter.attempts) == 1  # Fatal: no retry
    assert "ctx.sleep needs an async handler function" in letter.reason
    assert "make it `async def`" in letter.reason
    assert EFFECTS == {"e1:called": 1}  # it did not carry on as if it had slept
    assert await store.parked_list() == []


def test_waits_on_a_sync_function_is_a_config_error() -> None:
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"is sync: ctx\.wait_for_event needs `async def`"):
        built(
            f"- {{id: s, on: test/event, type: python, function: {HERE}:sync_sleeper,"
            " waits: [{event: order/paid}]}"
        )
