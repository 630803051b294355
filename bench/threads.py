"""Thread hand-off under load (why ``bridge.threads.nudge`` exists): how late a thread
of ours picks up what the event loop hands it while the bridge runs flat out.

The bridge runs on the memory connector (4 no-op handlers, ledger off) while a ticker
on its loop hands the time to a thread every 5 ms through a ``queue.SimpleQueue``, as
the loop hands calls to the SQLite store's thread and spans to the span processor's;
the thread records how late each one reached it. Variants: ``plain`` (the put alone)
and ``nudged`` (the put, then ``nudge()``, as the bridge does). Interleaved runs,
medians of each run's p50 / p99 / max.
"""

from __future__ import annotations

import asyncio
import queue
import statistics
import threading
import time
from typing import Any

from bench.common import Env, spread_ms
from bench.core import memory_bridge
from bench.payload import body
from bridge.threads import nudge

TICK = 0.005


async def one(bodies: list[bytes], nudged: bool) -> dict[str, float]:
    """One bridge run with the ticker: the thread's lateness p50 / p99 / max in ms."""
    handed: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    late: list[int] = []

    def pick_up() -> None:
        while (sent := handed.get()) is not None:
            late.append(time.perf_counter_ns() - sent)

    thread = threading.Thread(target=pick_up, name="bench-hand-off", daemon=True)
    thread.start()
    running = True

    async def ticker() -> None:
        while running:
            handed.put(time.perf_counter_ns())
            if nudged:
                nudge()
            await asyncio.sleep(TICK)

    ticks = asyncio.ensure_future(ticker())
    try:
        await memory_bridge(bodies)
    finally:
        running = False
        await ticks
        handed.put(None)
        thread.join(10)
    spread = spread_ms(late)
    return {**spread, "hand_offs": spread["samples"]}


async def hand_off(env: Env) -> dict[str, Any]:
    """The thread's lateness with and without the nudge, the bridge under load."""
    bodies = [body(n) for n in range(env.size(8_000, 1_000))]
    await memory_bridge(bodies[:500])  # warm up
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "nudged": []}
    for _ in range(env.runs):
        for variant in runs:
            runs[variant].append(await one(bodies, variant == "nudged"))
    variants = {
        v: {
            key: statistics.median(r[key] for r in rs)
            for key in ("p50_ms", "p99_ms", "max_ms", "hand_offs")
        }
        | {"runs": rs}
        for v, rs in runs.items()
    }
    return {
        "unit": "ms",
        "tick_ms": TICK * 1000,
        "variants": variants,
        "ratios": {},
        "goals": [],
    }
