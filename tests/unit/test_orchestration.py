"""Orchestration on the real dispatcher and a memory store: parked retries and their
scheduler, durable steps, on_complete events, joins, and the run history."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest

from bridge import Context, Event, RetryAfter
from bridge.normalize import Normalizer
from bridge.scheduler import ParkedSource
from bridge.transport import EventMapping, Settlement
from handlers.join import JoinHandler, JoinSweeper
from tests.unit.test_dispatch import FakeClock, delivery, make, process

CALLS: Counter[str] = Counter()
SIDE_EFFECTS: Counter[str] = Counter()
HERE = "tests.unit.test_orchestration"


async def parks_once(event: Event[Any], ctx: Context) -> dict[str, int]:
    CALLS[f"{ctx.handler_id}:{ctx.attempt}"] += 1
    if ctx.attempt == 1:
        raise RetryAfter("come back in two minutes", delay=120.0)
    return {"attempt": ctx.attempt}


async def parks_always(event: Event[Any], ctx: Context) -> None:
    CALLS[f"{ctx.handler_id}:{ctx.attempt}"] += 1
    raise RetryAfter("still busy", delay=120.0)


async def ok(event: Event[Any], ctx: Context) -> dict[str, str]:
    CALLS[ctx.handler_id] += 1
    return {"handled": event.id}


async def broken(event: Event[Any], ctx: Context) -> None:
    from bridge import Fatal

    raise Fatal("cannot handle this one")


def charge(event_id: str) -> dict[str, Any]:
    SIDE_EFFECTS[event_id] += 1
    return {"charge_id": f"ch-{event_id}", "calls": SIDE_EFFECTS[event_id]}


async def charges_then_fails_once(event: Event[Any], ctx: Context) -> Any:
    receipt = await ctx.step("charge-card", charge, event.id)
    if ctx.attempt == 1:
        raise ConnectionError("the mailer is down after charging")
    return receipt


async def reuses_a_step_id(event: Event[Any], ctx: Context) -> None:
    await ctx.step("same", charge, event.id)
    await ctx.step("same", charge, event.id)


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    SIDE_EFFECTS.clear()


def inbox_normalizer(runtime: Any) -> Normalizer:
    return Normalizer("scheduler", "inbox", EventMapping(), runtime.catalog, 1_000_000)


async def run_due(runtime: Any, wall: float) -> list[Settlement]:
    """Claim every parked run due at ``wall`` and process it like the runtime does."""
    source = ParkedSource(runtime.store, wall=lambda: wall, poll_interval=0.01)
    outcomes = []
    runs = await runtime.store.parked_claim(wall, 100, 300.0)
    for run in runs:
        d = source._delivery(run)
        outcome = await runtime.dispatcher.process(d, inbox_normalizer(runtime))
        await d.settle(outcome)
        outcomes.append(outcome)
    return outcomes


async def test_a_long_retry_is_parked_the_message_settled_and_the_scheduler_resumes_it() -> None:
    runtime, store, _ = make(
        f"""
        - {{id: slow-partner, on: test/event, type: python, function: {HERE}:parks_once}}
        - {{id: quick, on: test/event, type: python, function: {HERE}:ok}}
        """,
        FakeClock(),
    )
    runtime.dispatcher.wall = lambda: 1_000.0
    d, _ = delivery("e1")
    assert await process(runtime, d) is Settlement.ACK  # settled while the retry waits
    parked = await store.parked_list()
    assert [(p.handler, p.attempt, p.due_at) for p in parked] == [("slow-partner", 2, 1_120.0)]
    assert [a.number for a in parked[0].attempts] == [1]
    assert "come back" in (parked[0].attempts[0].error or "")
    assert await store.ledger_final([("slow-partner", "t\x1fe1")]) == {}  # not final yet
    assert await store.ledger_final([("quick", "t\x1fe1")]) == {("quick", "t\x1fe1"): "succeeded"}
    assert await store.dead_letters() == []

    assert await run_due(runtime, 1_119.0) == []  # not due yet
    assert await run_due(runtime, 1_121.0) == [Settlement.ACK]
    assert CALLS == {"slow-partner:1": 1, "slow-partner:2": 1, "quick": 1}
    assert await store.parked_list() == []
    entries = await store.ledger_get([("slow-partner", "t\x1fe1")])
    assert entries[("slow-partner", "t\x1fe1")].result == {"attempt": 2}
    assert await run_due(runtime, 2_000.0) == []  # nothing runs twice


async def test_a_parked_run_that_keeps_failing_is_parked_again_then_dead_lettered() -> None:
    runtime, store, _ = make(
        f"""
        - id: stubborn
          on: test/event
          type: python
          function: {HERE}:parks_always
          retry: {{attempts: 3, min_delay: 1s, max_delay: 1s, jitter: 0}}
        """,
        FakeClock(),
    )
    runtime.dispatcher.wall = lambda: 0.0
    await process(runtime, delivery("e1")[0])
    for wall in (200.0, 400.0):
        runtime.dispatcher.wall = lambda w=wall: w
        assert await run_due(runtime, wall) == [Settlement.ACK]
        if wall == 200.0:
            (again,) = await store.parked_list()
            assert again.attempt == 3 and again.due_at == 320.0
    assert await store.parked_list() == []
    (letter,) = await store.dead_letters()
    assert letter.handler == "stubborn"
    assert [a.number for a in letter.attempts] == [1, 2, 3]
    assert CALLS == {"stubborn:1": 1, "stubborn:2": 1, "stubborn:3": 1}


async def test_a_parked_retry_for_a_handler_that_no_longer_exists_is_dead_lettered_once() -> None:
    runtime, store, _ = make(
        f"""
        - {{id: slow-partner, on: test/event, type: python, function: {HERE}:parks_once}}
        """,
        FakeClock(),
    )
    runtime.dispatcher.wall = lambda: 0.0
    await process(runtime, delivery("e1")[0])
    (run,) = await store.parked_list()
    run.handler = "renamed-since"
    await store.parked_done([run.id])
    await store.parked_put([run])
    assert await run_due(runtime, 500.0) == [Settlement.ACK]
    assert await store.parked_list() == []
    (letter,) = await store.dead_letters()
    assert "does not exist" in letter.reason


async def test_a_durable_step_runs_once_across_retries_and_returns_its_kept_result() -> None:
    runtime, store, _ = make(
        f"""
        - {{id: checkout, on: test/event, type: python, function: {HERE}:charges_then_fails_once}}
        """,
        FakeClock(),
    )
    await process(runtime, delivery("order-1")[0])
    assert SIDE_EFFECTS == {"order-1": 1}  # the retry did not charge again
    entries = await store.ledger_get([("checkout", "t\x1forder-1")])
    assert entries[("checkout", "t\x1forder-1")].result == {"charge_id": "ch-order-1", "calls": 1}
    # A redelivery after success skips the run; a new event charges once more.
    await process(runtime, delivery("order-1")[0])
    await process(runtime, delivery("order-2")[0])
    assert SIDE_EFFECTS == {"order-1": 1, "order-2": 1}


async def test_a_step_id_used_twice_in_one_attempt_dead_letters_the_run() -> None:
    runtime, store, _ = make(
        f"""
        - {{id: sloppy, on: test/event, type: python, function: {HERE}:reuses_a_step_id}}
        """,
        FakeClock(),
    )
    await process(runtime, delivery("e1")[0])
    (letter,) = await store.dead_letters()
    assert "used twice" in letter.reason
    assert len(letter.attempts) == 1  # a mistake in the handler is not retried
    assert SIDE_EFFECTS == {"e1": 1}


ON_COMPLETE = "events: {test/event: {schema: none, on_complete: test/completed}}"


async def test_on_complete_lists_every_branch_once_all_are_final() -> None:
    runtime, _, emitted = make(
        f"""
        - {{id: a, on: test/event, type: python, function: {HERE}:ok}}
        - {{id: b, on: test/event, type: python, function: {HERE}:broken}}
        - {{id: c, on: test/event, type: python, function: {HERE}:ok}}
        """,
        FakeClock(),
        events="{test/event: {schema: none, on_complete: test/completed}}",
    )
    d, _ = delivery("e1", {"x": 1})
    await process(runtime, d)
    (done,) = emitted
    assert done.type == "test/completed" and done.parentid == "e1"
    assert done.correlationid == "e1"
    assert done.data["status"] == "partial"
    assert (done.data["succeeded"], done.data["dead_lettered"]) == (2, 1)
    assert done.data["failed"] == ["b"]
    assert done.data["runs"]["a"] == {"status": "succeeded", "result": {"handled": "e1"}}
    assert done.data["runs"]["b"]["status"] == "dead_lettered"
    assert "cannot handle" in done.data["runs"]["b"]["error"]
    # A redelivery runs nothing and emits the same completion (same id: the inbox dedups it).
    await process(runtime, delivery("e1", {"x": 1})[0])
    assert [e.id for e in emitted] == [done.id, done.id]
    assert emitted[1].data == done.data
    assert CALLS == {"a": 1, "c": 1}


async def test_on_complete_waits_for_a_parked_branch() -> None:
    runtime, _, emitted = make(
        f"""
        - {{id: quick, on: test/event, type: python, function: {HERE}:ok}}
        - {{id: slow-partner, on: test/event, type: python, function: {HERE}:parks_once}}
        """,
        FakeClock(),
        events="{test/event: {schema: none, on_complete: test/completed}}",
    )
    runtime.dispatcher.wall = lambda: 0.0
    await process(runtime, delivery("e1")[0])
    assert emitted == []  # one branch is parked: not complete
    await run_due(runtime, 500.0)
    (done,) = emitted
    assert done.data["status"] == "succeeded"
    assert done.data["runs"] == {
        "quick": {"status": "succeeded", "result": {"handled": "e1"}},
        "slow-partner": {"status": "succeeded", "result": {"attempt": 2}},
    }


JOIN = """
- id: collect
  type: join
  start: batch/started
  on: report/done
  match: "event.data.batch == start.data.batch"
  expect: start.data.ids
  member_key: event.data.id
  within: 60s
  emit: batch/finished
  on_timeout: batch/timed-out
"""


def event_delivery(event_id: str, event_type: str, data: Any) -> Any:
    return delivery(event_id, data, event_type)[0]


async def test_a_join_collects_early_and_late_members_and_completes_once() -> None:
    runtime, store, _ = make(JOIN, FakeClock())
    norm = inbox_normalizer(runtime)
    dispatcher = runtime.dispatcher

    async def send(event_id: str, event_type: str, data: Any) -> None:
        outcome = await dispatcher.process(event_delivery(event_id, event_type, data), norm)
        assert outcome is Settlement.ACK

    await send("r-a", "report/done", {"batch": "B1", "id": "a"})  # before the join opens
    await send("r-x", "report/done", {"batch": "OTHER", "id": "x"})  # belongs elsewhere
    await send("start-1", "batch/started", {"batch": "B1", "ids": ["a", "b", "c"]})
    await send("r-b", "report/done", {"batch": "B1", "id": "b"})
    await send("r-b", "report/done", {"batch": "B1", "id": "b"})  # redelivered
    assert await store.inbox_pending(0, 10) == []  # 2 of 3
    await send("r-c", "report/done", {"batch": "B1", "id": "c"})
    await send("r-late", "report/done", {"batch": "B1", "id": "c"})  # after completion
    outcomes = [orjson.loads(e.body) for e in await store.inbox_pending(0, 10)]
    assert [o["type"] for o in outcomes] == ["batch/finished"]
    data = outcomes[0]["data"]
    assert data["status"] == "completed" and (data["expected"], data["received"]) == (3, 3)
    assert [m["key"] for m in data["members"]] == ["a", "b", "c"]
    assert outcomes[0]["parentid"] == "start-1"
    # A redelivered start opens nothing new and completes nothing twice.
    await send("start-1", "batch/started", {"batch": "B1", "ids": ["a", "b", "c"]})
    assert len(await store.inbox_pending(0, 10)) == 1


async def test_a_join_times_out_once_and_lists_what_is_missing() -> None:
    runtime, store, _ = make(JOIN, FakeClock())
    norm = inbox_normalizer(runtime)
    start = event_delivery("start-2", "batch/started", {"batch": "B2", "ids": ["x", "y", "z"]})
    await runtime.dispatcher.process(start, norm)
    await runtime.dispatcher.process(
        event_delivery("r-y", "report/done", {"batch": "B2", "id": "y"}), norm
    )
    owners = {h.id: h.handler for h in runtime.handlers.values()}
    assert isinstance(owners["collect"], JoinHandler)
    woken: list[int] = []
    early = JoinSweeper(store, owners, lambda: woken.append(1), wall=time.time)
    assert await early.sweep() == 0
    late = JoinSweeper(store, owners, lambda: woken.append(1), wall=lambda: time.time() + 61)
    assert [await late.sweep(), await late.sweep()] == [1, 0]
    assert woken == [1]
    (entry,) = await store.inbox_pending(0, 10)
    outcome = orjson.loads(entry.body)
    assert outcome["type"] == "batch/timed-out"
    assert outcome["data"]["missing"] == ["x", "z"]
    assert outcome["data"]["received"] == 1
    # A member arriving after the timeout finds the join closed: it is buffered, not added.
    await runtime.dispatcher.process(
        event_delivery("r-x", "report/done", {"batch": "B2", "id": "x"}), norm
    )
    assert len(await store.inbox_pending(0, 10)) == 1


async def test_the_run_history_records_events_runs_attempts_and_status() -> None:
    runtime, store, _ = make(
        f"""
        - {{id: a, on: test/event, type: python, function: {HERE}:ok}}
        - {{id: b, on: test/event, type: python, function: {HERE}:broken}}
        - {{id: checkout, on: test/pay, type: python, function: {HERE}:charges_then_fails_once}}
        """,
        FakeClock(),
        history="{enabled: true}",
    )
    assert runtime.history is not None
    await process(runtime, delivery("e1")[0])
    await process(runtime, delivery("p1", {}, "test/pay")[0])
    await process(runtime, delivery("nobody", {}, "test/unknown")[0])
    await runtime.history.flush()
    listed = {r.id: r.status for r in await store.history_events()}
    assert listed == {"e1": "partial", "p1": "succeeded", "nobody": "unrouted"}
    runs = {r.handler: r for r in await store.history_runs("p1")}
    assert [a.error is None for a in runs["checkout"].attempts] == [False, True]
    assert runs["checkout"].result == {"charge_id": "ch-p1", "calls": 1}
    runs = {r.handler: r.status for r in await store.history_runs("e1")}
    assert runs == {"a": "succeeded", "b": "dead_lettered"}


async def test_a_buffered_member_is_collected_by_one_join_only() -> None:
    runtime, store, _ = make(JOIN, FakeClock())
    norm = inbox_normalizer(runtime)
    send = runtime.dispatcher.process
    await send(event_delivery("r-a", "report/done", {"batch": "B3", "id": "a"}), norm)
    await send(event_delivery("s1", "batch/started", {"batch": "B3", "ids": ["a"]}), norm)
    # The same batch started again: the member went to the first join, not to this one.
    await send(event_delivery("s2", "batch/started", {"batch": "B3", "ids": ["a"]}), norm)
    outcomes = [orjson.loads(e.body)["data"] for e in await store.inbox_pending(0, 10)]
    assert [(o["start"]["id"], o["status"]) for o in outcomes] == [("s1", "completed")]
    assert await store.join_buffered("collect", time.time()) == []


async def test_a_completion_event_never_completes_itself() -> None:
    runtime, _, emitted = make(
        f"""
        - {{id: audit, on: "test/*", type: python, function: {HERE}:ok}}
        """,
        FakeClock(),
        events="{test/*: {schema: none, on_complete: test/completed}}",
    )
    await process(runtime, delivery("e1")[0])
    (done,) = emitted
    assert done.data["event"]["data"] == {}
    # The completion comes back through the inbox: it is handled, and completes nothing.
    from bridge.transport import Delivery

    async def settle(outcome: Settlement) -> None:
        return None

    again = Delivery(done.to_json(), {}, {"message_id": done.id}, settle, "inbox")
    assert await runtime.dispatcher.process(again, inbox_normalizer(runtime)) is Settlement.ACK
    assert len(emitted) == 1
    assert CALLS == {"audit": 2}
