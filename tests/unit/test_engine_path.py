"""The engine's fast path keeps its guarantees: a timeout counts from the call's start even
when it is armed at the call's first wait, a call that never waits needs none, and intake
lets a backlog's deliveries run before it has taken max_in_flight of them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.transport import Settlement
from connectors.memory import BROKER
from tests.unit.test_dispatch import delivery, make, process

TOPIC = f"engine-path-{time.time_ns()}"
TAKEN_UNDONE: list[int] = []  # at each handler call: deliveries taken from the topic, not done


async def busy_then_waits(event: Event[Any], ctx: Context) -> None:
    """Busy past its timeout before it first waits, then would wait for long."""
    until = time.monotonic() + 0.15
    while time.monotonic() < until:
        pass
    await asyncio.sleep(30)


async def never_waits(event: Event[Any], ctx: Context) -> str:
    return f"done {event.id} attempt {ctx.attempt}"


async def counts_taken(event: Event[Any], ctx: Context) -> None:
    taken = 300 - BROKER.topic(TOPIC).queue.qsize()
    TAKEN_UNDONE.append(taken - len(TAKEN_UNDONE))


async def test_a_timeout_counts_from_the_start_of_the_call_not_from_its_first_wait() -> None:
    runtime, store, _ = make(
        "- {id: h, on: test/event, type: python, timeout: 50ms,"
        " function: 'tests.unit.test_engine_path:busy_then_waits',"
        " retry: {attempts: 1}}"
    )
    d, _ = delivery("e1")
    assert await asyncio.wait_for(process(runtime, d), 10) is Settlement.ACK
    (letter,) = store.letters.values()
    assert [a.error for a in letter.attempts] == ["TimeoutError: attempt timed out after 0.05s"]


async def test_calls_that_never_wait_succeed_side_by_side_and_leave_no_deadline_armed() -> None:
    runtime, store, _ = make(
        "".join(
            f"- {{id: h{n}, on: test/event, type: python, timeout: 10ms,"
            f" function: 'tests.unit.test_engine_path:never_waits'}}\n"
            for n in range(4)
        )
    )
    assert runtime.dispatcher is not None
    for n in range(20):
        d, _ = delivery(f"e{n}")
        assert await process(runtime, d) is Settlement.ACK
    assert not store.letters
    assert runtime.metrics.value("bridge_runs_total", outcome="succeeded") == 80
    queues = runtime.dispatcher.runner.watchdog._queues
    assert sum(len(q) for q in queues.values()) == 0  # nothing was armed for them


async def test_intake_lets_a_backlog_run_before_taking_max_in_flight_of_it() -> None:
    TAKEN_UNDONE.clear()
    topic = TOPIC
    cfg = load_config_text(
        "version: 1\nstore: memory://\nserver: {enabled: false}\n"
        f"connectors:\n  in: {{type: memory, topic: {topic},"
        " consume: {event: {type: job/run}, max_in_flight: 1000}}\n"
        "handlers:\n  - {id: h, on: job/run, type: python,"
        ' function: "tests.unit.test_engine_path:counts_taken"}\n',
        {},
    )
    for n in range(300):
        BROKER.put(topic, b'{"n": %d}' % n)
    runtime = Runtime(cfg)
    task = asyncio.create_task(runtime.run())
    try:
        async with asyncio.timeout(20):
            while len(TAKEN_UNDONE) < 300:
                await asyncio.sleep(0.01)
    finally:
        runtime.request_stop()
        await task
    assert len(TAKEN_UNDONE) == 300
    # All 300 were waiting at start; each ran with at most a few dozen taken and unfinished.
    assert max(TAKEN_UNDONE) <= 64
