"""Flow control: retry budgets, rate limits and concurrency per key, on a hand-driven clock."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Awaitable
from typing import Any

import pytest

from bridge.app import load_config_text
from bridge.errors import ConfigError
from bridge.events import Event
from bridge.flow import (
    Budgets,
    HandlerFlow,
    KeyedLimiter,
    RateLimiter,
    RetryBudget,
    RetryBudgetConfig,
)


class ManualClock:
    """Time moves only when the test calls ``advance``; sleeps end when their time comes."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, fut))
        await fut

    @property
    def sleeping(self) -> int:
        return sum(1 for _, f in self._sleepers if not f.done())

    async def advance(self, seconds: float) -> None:
        """Move time on in small steps, letting every task run at each step."""
        end = self.now + seconds
        while True:
            due = [at for at, f in self._sleepers if not f.done() and at <= end]
            self.now = min([*due, end])
            for at, fut in self._sleepers:
                if at <= self.now and not fut.done():
                    fut.set_result(None)
            self._sleepers = [(a, f) for a, f in self._sleepers if not f.done()]
            await settle()
            if self.now >= end:
                return


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


def spawn(
    coros: list[Awaitable[Any]],
) -> list[asyncio.Task[Any]]:
    return [asyncio.ensure_future(c) for c in coros]


# --------------------------------------------------------------------------- rate limit


async def test_rate_limiter_admits_exactly_n_per_period_in_arrival_order() -> None:
    clock = ManualClock()
    limiter = RateLimiter(5, 1.0, clock=clock)
    admitted: list[tuple[int, float]] = []

    async def caller(i: int) -> None:
        await limiter.acquire()
        admitted.append((i, clock.now))

    tasks = spawn([caller(i) for i in range(12)])
    await settle()
    assert [i for i, _ in admitted] == [0, 1, 2, 3, 4]
    assert limiter.waiting == 7
    assert clock.sleeping == 1  # only the head of the queue sleeps: no herd, no polling
    await clock.advance(0.999)
    assert len(admitted) == 5
    await clock.advance(0.001)
    assert len(admitted) == 10
    await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert [i for i, _ in admitted] == list(range(12))  # FIFO
    times = [t for _, t in admitted]
    assert times == [0.0] * 5 + [1.0] * 5 + [2.0] * 2
    for t in times:  # never more than 5 in any window of one second
        assert sum(1 for u in times if t <= u < t + 1.0) <= 5


async def test_rate_limiter_non_blocking_delay_and_try_acquire() -> None:
    clock = ManualClock()
    limiter = RateLimiter(2, 10.0, clock=clock)
    assert limiter.delay() == 0.0
    assert limiter.try_acquire()
    clock.now = 4.0
    assert limiter.try_acquire()
    assert not limiter.try_acquire()  # nothing taken by a refusal
    assert limiter.delay() == pytest.approx(6.0)  # the first admission leaves the window at 10
    waiter = asyncio.ensure_future(limiter.acquire())
    await settle()
    assert limiter.delay() == pytest.approx(10.0)  # behind the queued caller: the 14s slot
    assert not limiter.try_acquire()  # a queued caller is not overtaken
    await clock.advance(6.0)
    assert await waiter == pytest.approx(6.0)


async def test_a_cancelled_rate_limit_waiter_takes_no_admission() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, 1.0, clock=clock)
    await limiter.acquire()
    head = asyncio.ensure_future(limiter.acquire())
    second = asyncio.ensure_future(limiter.acquire())
    third = asyncio.ensure_future(limiter.acquire())
    await settle()
    head.cancel()
    second.cancel()
    await settle()
    assert limiter.waiting == 1
    await clock.advance(1.0)
    assert third.done() and await third == pytest.approx(1.0)
    # The cancelled ones used nothing: the next admission is one period later, not three.
    assert limiter.delay() == pytest.approx(1.0)
    assert head.cancelled() and second.cancelled()


# --------------------------------------------------------------------------- retry budget


async def test_budget_delays_retries_beyond_the_ratio_and_lets_every_one_through_later() -> None:
    clock = ManualClock()
    budget = RetryBudget(0.2, 10.0, 0.0, clock=clock)
    for _ in range(50):
        budget.record_first_attempt()
    done: list[float] = []

    async def retry() -> None:
        await budget.acquire_retry()
        done.append(clock.now)

    tasks = spawn([retry() for _ in range(30)])
    await settle()
    assert len(done) == 10  # 20% of 50 first attempts
    assert budget.counts == (50, 10)
    assert budget.retry_delay() > 0
    await clock.advance(10.9)
    assert len(done) == 10  # still inside the window: delayed, not run
    await clock.advance(0.2)
    # The window emptied: the floor of one retry per window lets the next go.
    assert len(done) == 11
    for _ in range(5):
        budget.record_first_attempt()  # fresh traffic grows the budget at once
    await settle()
    assert len(done) == 11  # 5 * 0.2 = 1 retry allowed, and one is in the window already
    for _ in range(5):
        budget.record_first_attempt()
    await settle()
    assert len(done) == 12
    await clock.advance(1000.0)
    await asyncio.gather(*tasks)
    assert len(done) == 30  # none dropped
    assert done == sorted(done)


async def test_budget_floor_allows_min_per_second_without_traffic() -> None:
    clock = ManualClock()
    budget = RetryBudget(0.2, 10.0, 1.0, clock=clock)  # reserve: 10 retries per 10s
    admitted = [budget.try_retry() for _ in range(12)]
    assert admitted == [True] * 10 + [False] * 2
    assert budget.retry_delay() == pytest.approx(11.0)  # the slice of t=0 leaves at 11s
    clock.now = 11.0
    assert budget.try_retry()


async def test_a_shared_budget_is_one_budget_and_inline_ones_are_private() -> None:
    clock = ManualClock()
    budgets = Budgets(
        {"payments": RetryBudgetConfig(ratio=0.5, window=10, min_per_second=0)}, clock
    )
    a, b = budgets.resolve("payments"), budgets.resolve("payments")
    assert a is b is budgets["payments"]
    assert budgets.resolve(None) is None
    inline = RetryBudgetConfig(ratio=0.5, window=10, min_per_second=0)
    assert budgets.resolve(inline) is not budgets.resolve(inline)
    assert a is not None and b is not None
    for _ in range(4):
        a.record_first_attempt()
    assert b.try_retry() and a.try_retry()
    assert not b.try_retry()  # 50% of 4 first attempts across both handlers
    with pytest.raises(KeyError, match="unknown retry budget 'nope'"):
        budgets.resolve("nope")


async def test_a_cancelled_retry_is_not_counted_and_the_next_one_goes() -> None:
    clock = ManualClock()
    budget = RetryBudget(1.0, 10.0, 0.0, clock=clock)
    budget.record_first_attempt()
    assert budget.try_retry()
    first = asyncio.ensure_future(budget.acquire_retry())
    second = asyncio.ensure_future(budget.acquire_retry())
    await settle()
    first.cancel()
    await settle()
    budget.record_first_attempt()
    await settle()
    assert second.done()
    assert budget.counts == (2, 2)


# --------------------------------------------------------------------------- keyed limit


async def test_same_key_never_overlaps_while_other_keys_run_in_parallel() -> None:
    limiter = KeyedLimiter(1)
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    most_overall = 0
    order: list[tuple[str, int]] = []
    release = asyncio.Event()

    async def run(key: str, i: int) -> None:
        nonlocal most_overall
        async with limiter.hold(key):
            running[key] = running.get(key, 0) + 1
            most[key] = max(most.get(key, 0), running[key])
            most_overall = max(most_overall, sum(running.values()))
            order.append((key, i))
            await release.wait()
            running[key] -= 1

    tasks = spawn([run(key, i) for i in range(4) for key in ("ann", "bob", "cy")])
    await settle()
    assert sorted(running.items()) == [("ann", 1), ("bob", 1), ("cy", 1)]
    release.set()
    await asyncio.gather(*tasks)
    assert most == {"ann": 1, "bob": 1, "cy": 1}
    assert most_overall == 3  # the three keys did run side by side
    assert [i for k, i in order if k == "ann"] == [0, 1, 2, 3]  # FIFO per key
    assert len(limiter) == 0  # idle keys are freed


async def test_keyed_limit_of_two_and_idle_keys_are_freed() -> None:
    limiter = KeyedLimiter(2)
    gates = [asyncio.Event() for _ in range(3)]

    async def run(i: int) -> None:
        async with limiter.hold("k"):
            await gates[i].wait()

    tasks = spawn([run(i) for i in range(3)])
    await settle()
    assert limiter.holders("k") == 2
    gates[0].set()
    await settle()
    assert limiter.holders("k") == 2 and tasks[0].done() and not tasks[2].done()
    gates[1].set()
    gates[2].set()
    await asyncio.gather(*tasks)
    assert len(limiter) == 0
    for i in range(1000):  # many distinct keys, each used once: the map stays empty
        async with limiter.hold(f"user-{i}"):
            pass
    assert len(limiter) == 0


async def test_cancelled_key_waiters_leak_no_place() -> None:
    limiter = KeyedLimiter(1)
    await limiter.acquire("k")
    waiting = spawn([limiter.acquire("k") for _ in range(3)])
    await settle()
    waiting[0].cancel()
    waiting[1].cancel()
    await settle()
    limiter.release("k")
    await settle()
    assert waiting[2].done() and limiter.holders("k") == 1
    limiter.release("k")
    assert len(limiter) == 0
    # Cancelled right after being handed the place: it passes it on.
    await limiter.acquire("k")
    a = asyncio.ensure_future(limiter.acquire("k"))
    b = asyncio.ensure_future(limiter.acquire("k"))
    await settle()
    limiter.release("k")  # hands the place to a...
    a.cancel()  # ...which is cancelled before it runs
    await settle()
    assert a.cancelled() and b.done() and limiter.holders("k") == 1
    limiter.release("k")
    assert len(limiter) == 0
    # The only waiter cancelled while the holder stays: the key is still held, no more.
    await limiter.acquire("k")
    c = asyncio.ensure_future(limiter.acquire("k"))
    await settle()
    c.cancel()
    await settle()
    assert limiter.holders("k") == 1
    limiter.release("k")
    assert len(limiter) == 0
    with pytest.raises(RuntimeError, match="not held"):
        limiter.release("k")


# --------------------------------------------------------------------------- per handler


def _event(data: dict[str, Any]) -> Event[Any]:
    return Event(id="e1", source="test", type="user/updated", data=data)


HEAD = """\
version: 1
store: memory://
server: {enabled: false}
retry_budgets:
  payments: {ratio: 0.1, window: 30s, min_per_second: 0.5}
handlers:
  - id: charge
    on: user/updated
    type: log
"""


def _config(extra: str) -> Any:
    return load_config_text(HEAD + textwrap.indent(textwrap.dedent(extra), "    "), {})


def _issues(extra: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        _config(extra)
    return [(i.line, i.path, i.message) for i in info.value.issues]


async def test_handler_flow_from_config_holds_keys_budgets_and_rates() -> None:
    cfg = _config(
        """\
        retry_budget: payments
        rate_limit: {count: 2, per: 1m}
        concurrency_key: "{data.user_id}"
        """
    )
    clock = ManualClock()
    budgets = Budgets(cfg.retry_budgets, clock)
    flow = HandlerFlow.from_config(cfg.handlers[0], budgets, clock)
    assert flow is not None and flow.rate is not None and flow.keys is not None
    assert flow.budget is budgets["payments"]
    assert flow.key(_event({"user_id": 7})) == "7"
    assert flow.key(_event({})) is None  # no key: no key limit
    assert await flow.before_attempt(1) == 0.0
    assert await flow.before_attempt(2) == 0.0  # within the 15-retry floor
    assert budgets["payments"].counts == (1, 1)
    third = asyncio.ensure_future(flow.before_attempt(1))
    await settle()
    assert not third.done()  # two attempts per minute
    await clock.advance(60.0)
    assert await third == pytest.approx(60.0)

    entered: list[str] = []

    async def run(data: dict[str, Any], gate: asyncio.Event) -> None:
        async with flow.hold(_event(data)):
            entered.append(str(data.get("user_id")))
            await gate.wait()

    gate = asyncio.Event()
    tasks = spawn([run({"user_id": 1}, gate), run({"user_id": 1}, gate), run({}, gate)])
    await settle()
    assert sorted(entered) == ["1", "None"]
    gate.set()
    await asyncio.gather(*tasks)
    assert entered.count("1") == 2


def test_handler_without_flow_control_gets_none() -> None:
    cfg = _config("timeout: 1s\n")
    assert HandlerFlow.from_config(cfg.handlers[0], Budgets({})) is None


def test_inline_budget_and_defaults_load() -> None:
    cfg = _config("retry_budget: {ratio: 0.3}\n")
    budget = cfg.handlers[0].retry_budget
    assert budget == RetryBudgetConfig(ratio=0.3, window=10.0, min_per_second=1.0)
    assert cfg.retry_budgets["payments"].window == 30.0
    assert cfg.handlers[0].concurrency_per_key == 1


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "retry_budget: nope\n",
            (10, "handlers[0].retry_budget", "unknown retry budget 'nope' (known: payments)"),
        ),
        (
            "retry_budget: {ratio: 0.1, windw: 2s}\n",
            (
                10,
                "handlers[0].retry_budget.windw",
                "unknown key; did you mean `handlers[0].retry_budget.window`?",
            ),
        ),
        (
            "retry_budget: 5\n",
            (
                10,
                "handlers[0].retry_budget",
                "Value error, name a budget of `retry_budgets`, or give "
                "{ratio, window, min_per_second}",
            ),
        ),
        (
            "rate_limit: {count: 0, per: 1s}\n",
            (10, "handlers[0].rate_limit.count", "Input should be greater than or equal to 1"),
        ),
        (
            "timeout: 1s\nrate_limit:\n  count: 3\n  per: 0s\n",
            (13, "handlers[0].rate_limit.per", "Input should be greater than 0"),
        ),
        (
            'concurrency_key: "{user_id}"\n',
            (
                10,
                "handlers[0].concurrency_key",
                "Value error, unknown field 'user_id' in template '{user_id}' (use "
                "correlationid, data, event, id, index, item, source, subject, transport, type)",
            ),
        ),
        (
            "concurrency_key: '{data.user_id}'\nconcurrency_per_key: 0\n",
            (11, "handlers[0].concurrency_per_key", "Input should be greater than or equal to 1"),
        ),
    ],
)
def test_flow_config_mistakes_name_path_and_line(
    extra: str, expected: tuple[int, str, str]
) -> None:
    assert _issues(extra) == [expected]


def test_a_bad_shared_budget_names_its_line() -> None:
    text = HEAD.replace("ratio: 0.1, window: 30s", "ratio: -1, window: 30s")
    with pytest.raises(ConfigError) as info:
        load_config_text(text, {})
    assert [(i.line, i.path) for i in info.value.issues] == [(5, "retry_budgets.payments.ratio")]
