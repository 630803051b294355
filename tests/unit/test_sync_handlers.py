"""Sync Python handlers: their own bounded thread pool, and a retry that never overlaps
the thread of a timed-out attempt (a timeout cannot stop a thread).

Each call records (event, attempt, start, end) from inside the handler's thread; the
engine is the real one (dispatcher, attempts, timeouts), its retry sleeps skipped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from bridge import Context, Event
from tests.unit.test_dispatch import delivery, make, process

TIMEOUT = 0.3  # the handlers' timeout in seconds, as configured below

_lock = threading.Lock()
CALLS: list[tuple[str, int, float, float]] = []  # event id, attempt, start, end
RUNNING = [0, 0]  # calls in progress, peak


def _record(event: Event[Any], ctx: Context, seconds: float) -> None:
    with _lock:
        RUNNING[0] += 1
        RUNNING[1] = max(RUNNING[1], RUNNING[0])
    start = time.monotonic()
    time.sleep(seconds)
    with _lock:
        RUNNING[0] -= 1
        CALLS.append((event.id, ctx.attempt, start, time.monotonic()))


def slow_first(event: Event[Any], ctx: Context) -> str:
    """Sync: the first attempt blocks past the timeout (1.5x), later ones return at once."""
    _record(event, ctx, TIMEOUT * 1.5 if ctx.attempt == 1 else 0.0)
    return "ok"


def stuck(event: Event[Any], ctx: Context) -> None:
    """Sync: blocks far longer than the timeout and the wait a retry allows it."""
    _record(event, ctx, TIMEOUT * 5)


def busy(event: Event[Any], ctx: Context) -> None:
    """Sync: blocks a little."""
    _record(event, ctx, 0.1)


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    RUNNING[:] = [0, 0]


def handler(function: str, timeout: float = TIMEOUT, **extra: Any) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in extra.items())
    return (
        f"- {{id: h, on: test/event, type: python, timeout: {timeout}s, "
        f"function: 'tests.unit.test_sync_handlers:{function}', {fields}}}"
    )


async def threads_idle() -> None:
    """Wait until no call is running in a thread (a timed-out one may still be)."""
    async with asyncio.timeout(10):
        while RUNNING[0]:
            await asyncio.sleep(0.02)


def overlapping(calls: list[tuple[str, int, float, float]]) -> list[tuple[int, int]]:
    """Pairs of attempts of one event whose calls ran at the same time."""
    found = []
    by_start = sorted(calls, key=lambda c: c[2])
    for i, (event, attempt, _, end) in enumerate(by_start):
        for other, later, start, _ in by_start[i + 1 :]:
            if other == event and start < end:
                found.append((attempt, later))
    return found


async def test_a_retry_never_overlaps_the_thread_of_its_timed_out_attempt() -> None:
    runtime, store, _ = make(handler("slow_first", retry="{attempts: 3, min_delay: 0}"))
    d, _ = delivery("e1")
    await asyncio.wait_for(process(runtime, d), 10)
    await threads_idle()
    assert [(e, a) for e, a, *_ in sorted(CALLS, key=lambda c: c[2])] == [("e1", 1), ("e1", 2)]
    assert overlapping(CALLS) == []
    # The first attempt counted as timed out at its deadline; the second succeeded.
    (entry,) = (await store.ledger_get([("h", "t\x1fe1")])).values()
    assert entry.status == "succeeded"
    assert not store.letters


async def test_a_thread_that_outlasts_the_retry_wait_fails_the_attempt_without_a_call() -> None:
    """Bounded: the retry waits one more timeout for the old thread, then fails as timed out."""
    runtime, store, _ = make(handler("stuck", retry="{attempts: 2, min_delay: 0}"))
    d, _ = delivery("e1")
    began = time.monotonic()
    await asyncio.wait_for(process(runtime, d), 10)
    ended = time.monotonic() - began
    (letter,) = store.letters.values()
    errors = [a.error for a in letter.attempts]
    assert errors[0] == f"TimeoutError: attempt timed out after {TIMEOUT:g}s"
    assert "still running in its thread" in errors[1]
    assert ended < TIMEOUT * 5  # dead-lettered while the thread still ran
    await threads_idle()
    assert len(CALLS) == 1  # one call only: the second attempt never started another


async def test_the_pool_size_bounds_concurrent_sync_calls() -> None:
    runtime, _, _ = make(handler("busy", timeout=10, workers=2))
    pairs = [delivery(f"e{i}") for i in range(6)]
    await asyncio.wait_for(asyncio.gather(*(process(runtime, d) for d, _ in pairs)), 10)
    assert RUNNING[1] == 2
    assert len(CALLS) == 6


def test_workers_is_validated() -> None:
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError, match="workers"):
        make(handler("busy", workers=0))


async def test_a_shifted_deadline_does_not_hold_up_the_ones_queued_behind_it() -> None:
    """Two attempts with the same timeout: the first's deadline moves later (it waits for an
    old thread); the second is still cancelled at its own deadline, the first at its new one."""
    from bridge.deadlines import Watchdog, current_deadline

    watchdog = Watchdog()
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}
    began = loop.time()

    async def attempt(name: str, shift: float) -> None:
        deadline = watchdog.arm(0.2)
        assert current_deadline() is deadline
        deadline.shift(shift)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            ended[name] = loop.time() - began
        finally:
            deadline.finish()
        assert current_deadline() is None

    first = asyncio.create_task(attempt("shifted", 0.4))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(attempt("plain", 0.0))
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    watchdog.close()
    assert 0.2 <= ended["plain"] < ended["shifted"]
    assert ended["shifted"] >= 0.6
