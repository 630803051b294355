"""Flow control wired into the dispatcher: keys, budgets and rate limits on a fake clock."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge import Context, Event
from bridge.transport import Settlement
from tests.unit.test_dispatch import CALLS, FakeClock, delivery, make, process

RUNNING: dict[str, int] = {}
MOST: dict[str, int] = {}
GATE: list[asyncio.Event] = []


async def per_user(event: Event[Any], ctx: Context) -> None:
    user = str(event.data.get("user_id"))
    RUNNING[user] = RUNNING.get(user, 0) + 1
    MOST[user] = max(MOST.get(user, 0), RUNNING[user])
    MOST["all"] = max(MOST.get("all", 0), sum(v for k, v in RUNNING.items()))
    await GATE[0].wait()
    RUNNING[user] -= 1


async def test_runs_of_one_key_never_overlap_and_other_keys_run_alongside() -> None:
    RUNNING.clear()
    MOST.clear()
    GATE[:] = [asyncio.Event()]
    runtime, _, _ = make(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_flow_dispatch:per_user
          concurrency_key: "{data.user_id}"
        """
    )
    users = [1, 1, 2, 1, 2, 3]
    tasks = [
        asyncio.ensure_future(process(runtime, delivery(f"e{i}", {"user_id": u})[0]))
        for i, u in enumerate(users)
    ]
    for _ in range(50):
        await asyncio.sleep(0)
    assert RUNNING == {"1": 1, "2": 1, "3": 1}
    GATE[0].set()
    assert await asyncio.gather(*tasks) == [Settlement.ACK] * 6
    assert MOST["1"] == MOST["2"] == 1 and MOST["all"] == 3


async def test_retries_over_budget_wait_on_the_clock_and_still_run() -> None:
    clock = FakeClock()
    runtime, store, _ = make(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_dispatch:always_fails
          retry_budget: {ratio: 0, window: 10s, min_per_second: 0}
        """,
        clock,
    )
    d, _ = delivery("e1")
    assert await process(runtime, d) is Settlement.ACK
    # backoff 1s, retry admitted (none in the window); backoff 2s, then the budget
    # holds the second retry until the first one's slice leaves the window (t=12).
    assert clock.sleeps == [1.0, 2.0, 9.0]
    assert CALLS["h:e1"] == 3
    assert len(store.letters) == 1


async def test_rate_limit_spaces_attempts_on_the_clock() -> None:
    clock = FakeClock()
    runtime, _, _ = make(
        """\
        - id: h
          on: test/event
          type: python
          function: tests.unit.test_dispatch:ok
          rate_limit: {count: 1, per: 5s}
        """,
        clock,
    )
    for i in range(3):
        assert await process(runtime, delivery(f"e{i}")[0]) is Settlement.ACK
    assert clock.sleeps == [5.0, 5.0]
