"""What a delivery leaves for the garbage collector: nothing, failed or not.

``bridge run`` collects its young objects only every 100,000 net allocations
(``tune_gc``), so a cycle made per delivery would hold its event, run and frames that
long. These tests run with the collector off: whatever a delivery leaves behind is
freed by reference counting alone, or the test sees it still alive.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from bridge import Context, Event
from bridge.app.runtime import tune_gc
from bridge.transport import Settlement
from tests.unit.test_dispatch import FakeClock, delivery, make, process

RAISED: list[weakref.ref[BaseException]] = []


class Boom(Exception):
    """A handler's failure that can be watched (a weak reference)."""


async def boom(event: Event[Any], ctx: Context) -> None:
    exc = Boom(f"downstream is down (attempt {ctx.attempt})")
    RAISED.append(weakref.ref(exc))
    raise exc  # ``exc`` stays in this frame: the traceback would hold it


@pytest.fixture
def collector_off() -> Iterator[None]:
    RAISED.clear()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("collector_off")
async def test_a_failed_run_leaves_no_cycle_for_the_collector() -> None:
    clock = FakeClock()
    runtime, store, _ = make(
        "- {id: h, on: test/event, type: python, function: 'tests.unit.test_garbage:boom'}", clock
    )
    for n in range(3):
        d, _ = delivery(f"e{n}")
        assert await process(runtime, d) is Settlement.ACK
    # 3 deliveries of 3 attempts each, each dead-lettered with every attempt's traceback.
    assert len(store.letters) == 3
    assert [len(letter.attempts) for letter in store.letters.values()] == [3, 3, 3]
    assert all(
        "raise exc" in (a.traceback or "") for x in store.letters.values() for a in x.attempts
    )
    assert len(RAISED) == 9
    # Each failure, its traceback and the frames it held went with the run.
    assert [ref() for ref in RAISED] == [None] * 9


def test_the_young_generation_outgrows_what_deliveries_in_flight_hold() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (100_000, 50, 100)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
