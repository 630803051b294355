"""``bench.payload.reset``: each benchmark run starts on a collected heap."""

from __future__ import annotations

import gc
import weakref

from bench.payload import reset


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_a_run_starts_with_the_garbage_of_the_runs_before_it_collected() -> None:
    # What a bridge's teardown leaves is in cycles: only the collector frees it. Without
    # the collection at the start of each run, the variant whose deliveries in flight
    # crossed the young generation's threshold paid for the other variants' leftovers.
    enabled = gc.isenabled()
    gc.disable()  # no collection but the one under test
    try:
        left = [_Node() for _ in range(100)]
        for a, b in zip(left, left[1:] + left[:1], strict=True):
            a.other = b
        refs = [weakref.ref(n) for n in left]
        del left, a, b
        assert all(r() is not None for r in refs)  # a cycle outlives its last name

        tally = reset(8)

        assert [r for r in refs if r() is not None] == []
        assert gc.get_count()[0] < 100  # the young generation starts empty
        assert (tally.target, tally.runs) == (8, 0)
    finally:
        if enabled:
            gc.enable()
