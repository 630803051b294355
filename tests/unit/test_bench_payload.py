"""``bench.payload.reset``: each benchmark run starts with the young generation empty."""

from __future__ import annotations

import gc
import weakref

from bench.payload import reset


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_a_run_starts_with_what_the_runs_before_it_left_out_of_the_collectors_way() -> None:
    # What a bridge's teardown leaves is in cycles. Left in the young generation, the
    # variant whose deliveries in flight crossed its threshold walked the other
    # variants' leftovers inside its own timing.
    enabled = gc.isenabled()
    gc.disable()  # no collection but what the test asks for
    try:
        left = [_Node() for _ in range(100)]
        for a, b in zip(left, left[1:] + left[:1], strict=True):
            a.other = b
        refs = [weakref.ref(n) for n in left]
        del left, a, b
        frozen = gc.get_freeze_count()
        assert gc.get_count()[0] >= 100

        tally = reset(8)

        assert gc.get_count()[0] == 0  # the young generation starts empty
        assert gc.get_freeze_count() >= frozen + 100  # the leftovers are out of its way
        gc.collect()
        assert all(r() is not None for r in refs)  # not walked, nor freed, by a collection
        assert (tally.target, tally.runs) == (8, 0)
    finally:
        gc.unfreeze()
        if enabled:
            gc.enable()
