"""The intake asks for the running loop once, not once or twice per delivery.

On Python 3.11 each ``asyncio.get_running_loop()`` (and so each ``asyncio.create_task`` and
``asyncio.current_task()`` without a loop) makes a ``getpid`` system call, its check for a
fork: about 0.2 µs, which the intake paid twice a delivery on every transport.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

from bench.core import memory_config, run_bridge
from bench.payload import body
from connectors.memory import BROKER

EVENTS = 300


async def test_the_intake_asks_for_the_running_loop_once_not_per_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = asyncio.events.get_running_loop
    asked = 0

    def counted() -> asyncio.AbstractEventLoop:
        nonlocal asked
        asked += 1
        return real()

    topic, config = memory_config(width=4, store="memory://", ledger=False)

    def feed() -> None:  # once the bridge runs: its start-up is not counted
        monkeypatch.setattr(asyncio.events, "get_running_loop", counted)
        for n in range(EVENTS):
            BROKER.put(topic, body(n))

    try:
        tally = await run_bridge(config, EVENTS * 4, feed=feed, timeout=60)
    finally:
        monkeypatch.undo()
        gc.unfreeze()  # run_bridge's reset froze the test process's objects: give them back
    assert tally.runs == EVENTS * 4  # every delivery ran its 4 handlers
    assert asked < EVENTS // 10, f"{asked} asks for the running loop for {EVENTS} deliveries"
