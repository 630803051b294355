"""A fan-out's branches (``bridge.dispatch.branches.gather``): inline until one waits."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from bridge.dispatch.branches import gather
from tests.unit.test_dispatch import delivery, make, process

SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="-")


async def test_branches_that_never_wait_run_in_order_in_the_callers_task() -> None:
    caller = asyncio.current_task()
    ran: list[tuple[int, bool]] = []

    async def branch(n: int) -> int:
        ran.append((n, asyncio.current_task() is caller))
        return n * 10

    tasks_before = len(asyncio.all_tasks())
    assert await gather([branch(n) for n in range(4)]) == [0, 10, 20, 30]
    assert ran == [(0, True), (1, True), (2, True), (3, True)]
    assert len(asyncio.all_tasks()) == tasks_before


async def test_each_branch_sees_its_own_context_and_leaves_the_callers_alone() -> None:
    SEEN.set("caller")
    seen: list[str] = []

    async def branch(name: str, wait: bool) -> None:
        seen.append(SEEN.get())
        SEEN.set(name)
        if wait:
            await asyncio.sleep(0)
        seen.append(SEEN.get())

    await gather([branch("a", False), branch("b", True), branch("c", False)])
    # Each starts from the caller's value and keeps its own across its wait.
    assert sorted(seen) == ["a", "b", "c", "caller", "caller", "caller"]
    assert SEEN.get() == "caller"


async def test_the_first_branch_that_waits_stays_with_the_caller_and_the_rest_start_at_once() -> (
    None
):
    """Branch 1 waits for an event only branch 3 sets: had branch 3 waited for branch 1
    to end, this would never return."""
    caller = asyncio.current_task()
    gate = asyncio.Event()
    where: dict[str, bool] = {}

    async def first() -> str:
        return "first"

    async def waits() -> str:
        await gate.wait()
        where["waits"] = asyncio.current_task() is caller
        return "waited"

    async def opens() -> str:
        where["opens"] = asyncio.current_task() is caller
        gate.set()
        return "opened"

    async with asyncio.timeout(5):
        results = await gather([first(), waits(), opens()])
    assert results == ["first", "waited", "opened"]
    assert where == {"waits": True, "opens": False}


async def test_a_failure_is_raised_once_every_sibling_ended_the_first_in_order() -> None:
    ended: list[str] = []

    async def fails(name: str, wait: bool) -> None:
        if wait:
            await asyncio.sleep(0.01)
        ended.append(name)
        raise ValueError(name)

    async def ok(name: str) -> None:
        await asyncio.sleep(0.02)
        ended.append(name)

    with pytest.raises(ValueError, match=r"^inline$"):
        await gather([ok("a"), fails("inline", False), fails("later", True), ok("b")])
    assert sorted(ended) == ["a", "b", "inline", "later"]


async def test_cancelling_the_caller_cancels_every_branch_that_waits() -> None:
    cancelled: list[str] = []
    started = asyncio.Event()

    async def waits(name: str) -> None:
        try:
            started.set()
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def quick() -> None:
        return None

    caller = asyncio.ensure_future(gather([quick(), waits("inline"), waits("task")]))
    await started.wait()
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert sorted(cancelled) == ["inline", "task"]


async def sleepy(event: Any, ctx: Any) -> None:
    await asyncio.sleep(10)


async def test_a_branch_that_times_out_after_one_ran_inline_fails_alone() -> None:
    """The handler that waits comes after one that ran inline: its timeout cancels the
    delivery's task, which awaits it, and only its own attempt times out."""
    runtime, store, _ = make(
        f"""\
        - {{id: quick, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok'}}
        - {{id: slow, on: test/event, type: python, function: '{__name__}:sleepy', timeout: 10ms, retry: {{attempts: 1}}}}
        - {{id: after, on: test/event, type: python, function: 'tests.unit.test_dispatch:ok'}}
        """
    )
    d, _ = delivery("e1")
    await process(runtime, d)
    (letter,) = store.letters.values()
    assert letter.handler == "slow"
    assert [a.error for a in letter.attempts] == ["TimeoutError: attempt timed out after 0.01s"]
    final = await store.ledger_final([("quick", "t\x1fe1"), ("after", "t\x1fe1")])
    assert set(final.values()) == {"succeeded"} and len(final) == 2
