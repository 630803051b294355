"""A ``Lane`` of batched store calls (``bridge.store.batching``): how many batches leave
while one is in flight, and how long a call waits for one that is slow to come back."""

from __future__ import annotations

import asyncio

from bridge.store.batching import Call, Lane


class Gated:
    """A flush that records each batch's calls and holds every batch until let go."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.gates: list[asyncio.Event] = []

    async def __call__(self, calls: list[Call]) -> None:
        gate = asyncio.Event()
        self.batches.append([c.args[0] for c in calls])
        self.gates.append(gate)
        await gate.wait()
        for call in calls:
            call.answer(call.args[0])


async def sent(flush: Gated, count: int) -> None:
    """Until ``count`` batches were sent (a generous bound: no wall-clock figure)."""
    async with asyncio.timeout(10):
        while len(flush.batches) < count:
            await asyncio.sleep(0.001)


async def test_calls_made_while_a_batch_is_in_flight_wait_for_it_within_patience() -> None:
    flush = Gated()
    lane = Lane(flush, deadline=60.0, flights=2, patience=60.0)
    first = asyncio.ensure_future(lane.call("get", 0))
    await sent(flush, 1)
    later = [asyncio.ensure_future(lane.call("get", n)) for n in (1, 2, 3)]
    await asyncio.sleep(0.05)
    assert flush.batches == [[0]]  # a second flight is allowed, but patience holds it
    flush.gates[0].set()
    await sent(flush, 2)
    assert flush.batches == [[0], [1, 2, 3]]  # they left together, after the first
    flush.gates[1].set()
    assert await first == 0 and [await f for f in later] == [1, 2, 3]
    await lane.idle()


async def test_a_batch_slow_to_come_back_holds_the_next_calls_no_longer_than_patience() -> None:
    flush = Gated()
    lane = Lane(flush, deadline=60.0, flights=2, patience=0.01)
    first = asyncio.ensure_future(lane.call("get", 0))
    await sent(flush, 1)
    second = asyncio.ensure_future(lane.call("get", 1))
    await sent(flush, 2)  # beside the first, which has not come back
    assert flush.batches == [[0], [1]] and not first.done()
    third = asyncio.ensure_future(lane.call("get", 2))
    await asyncio.sleep(0.05)
    assert flush.batches == [[0], [1]]  # two flights at most: it waits for one of them
    flush.gates[1].set()
    await sent(flush, 3)
    assert flush.batches[2] == [2]
    for gate in flush.gates:
        gate.set()
    assert [await first, await second, await third] == [0, 1, 2]
    await lane.idle()


async def test_without_patience_a_call_leaves_beside_the_batch_in_flight_at_once() -> None:
    flush = Gated()
    lane = Lane(flush, deadline=60.0, flights=4)
    calls = [asyncio.ensure_future(lane.call("get", 0))]
    await sent(flush, 1)
    calls.append(asyncio.ensure_future(lane.call("get", 1)))
    await sent(flush, 2)
    assert flush.batches == [[0], [1]]
    for gate in flush.gates:
        gate.set()
    assert [await c for c in calls] == [0, 1]
    await lane.idle()
