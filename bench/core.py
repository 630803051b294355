"""The in-process bridge driver every scenario uses, the bare loop it is compared to, and
the width scenario (throughput as handlers per event go 1, 4, 16, 64).

``run_bridge`` starts a ``Runtime`` from a config text, feeds it (memory connector:
after it is ready; brokers: preloaded), and returns the ``Tally`` of handler runs:
rates are taken from the first handler run to the last, as for the baselines, so a
consumer group join or a connection set-up is not counted on either side.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bench.common import Env, Samples
from bench.payload import SubscriberCreated, Tally, body, bridge_config, handlers_for, reset
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from connectors.memory import BROKER

MEMORY_CONNECTOR = """\
    type: memory
    topic: {topic}
    consume: {{event: {{type: subscriber/created{event_id}}}, max_in_flight: {max_in_flight}}}"""

_topics = itertools.count()


async def run_bridge(
    config: str,
    target_runs: int,
    *,
    feed: Callable[[], Any] | None = None,
    latency: bool = False,
    setup: Callable[[Runtime], None] | None = None,
    sample_ratio: float | None = None,
    span_exporter: Any = None,
    until: Callable[[], Awaitable[None]] | None = None,
    after: Callable[[], Awaitable[None]] | None = None,
    ready: asyncio.Event | None = None,
    timeout: float = 600,
) -> Tally:
    """Run the bridge until its handlers ran ``target_runs`` times; its ``Tally``.

    ``until``, if given, is awaited next (e.g. until the queue reads empty), and the
    tally's ``last`` moves to when it returned. ``after``, if given, is awaited once the
    measurement ended, before the bridge stops (readings that must not be timed).
    ``ready`` is set once the sources started (a Kafka source: joined and assigned).
    """
    tally = reset(target_runs, latency)
    cfg = load_config_text(config, {})
    if sample_ratio is not None:
        cfg.telemetry.traces.sample_ratio = sample_ratio
    runtime = Runtime(cfg, span_exporter=span_exporter)
    if setup is not None:
        runtime.build()
        setup(runtime)
    task = asyncio.create_task(runtime.run())
    try:
        while not runtime.ready:
            if task.done():
                task.result()  # surface a crash instead of waiting for ever
            await asyncio.sleep(0.002)
        if ready is not None:
            ready.set()
        if feed is not None:
            result = feed()
            if asyncio.iscoroutine(result):
                await result
        done = asyncio.ensure_future(tally.done.wait())
        await asyncio.wait((task, done), timeout=timeout, return_when="FIRST_COMPLETED")
        done.cancel()
        if task.done():
            task.result()
        if not tally.done.is_set():
            raise TimeoutError(f"{tally.runs} of {target_runs} handler runs after {timeout}s")
        if until is not None:
            await until()
            tally.last = time.perf_counter()
            tally.cpu_last = time.process_time()
        if after is not None:
            await after()
    finally:
        runtime.request_stop()
        await task
    return tally


def memory_config(
    width: int = 4, max_in_flight: int = 1000, event_id: str = "", **more: Any
) -> tuple[str, str]:
    """(topic, config) of a bridge on a fresh memory topic; its events' ids from the
    template ``event_id`` if given (else the topic and offset, as the connector names
    them)."""
    topic = f"bench-{next(_topics)}-{time.time_ns()}"
    connector = MEMORY_CONNECTOR.format(
        topic=topic,
        max_in_flight=max_in_flight,
        event_id=f', id: "{event_id}"' if event_id else "",
    )
    return topic, bridge_config(connector, width=width, **more)


async def memory_bridge(bodies: list[bytes], width: int = 4, **run: Any) -> Tally:
    """The bridge fed by the in-process memory connector: its tally (``rate(width)``)."""
    topic, config = memory_config(width)

    def feed() -> None:
        for raw in bodies:
            BROKER.put(topic, raw)

    return await run_bridge(config, len(bodies) * width, feed=feed, **run)


async def bare_loop(bodies: list[bytes], width: int = 4) -> Tally:
    """The same work without the bridge: parse, validate, gather; its tally."""
    tally = reset(len(bodies) * width)
    handlers = handlers_for(width)
    for raw in bodies:
        data = SubscriberCreated.model_validate(orjson.loads(raw))
        await asyncio.gather(*(h(data, None) for h in handlers))
    return tally


WIDTHS = (1, 4, 16, 64)


async def width(env: Env) -> dict[str, Any]:
    """Scenario 8: events/s as handlers per event go 1, 4, 16, 64; bridge vs bare loop."""
    events = env.size(2500, 200)
    bodies = [body(n) for n in range(events)]
    await memory_bridge(bodies[:200])  # warm up imports and caches
    samples = Samples()
    for _ in range(env.runs):  # interleaved, so drift in machine load hits all alike
        for w in WIDTHS:
            samples.add(f"bare_w{w}", await bare_loop(bodies, w), w)
            samples.add(f"bridge_w{w}", await memory_bridge(bodies, w), w)
    result = samples.result(
        "events/s",
        [(f"bridge_w{w}", f"bare_w{w}") for w in WIDTHS],
        events_per_run=events,
        connector="memory (in-process), ledger off",
    )
    v = result["variants"]
    result["runs_per_s"] = {f"bridge_w{w}": v[f"bridge_w{w}"]["median"] * w for w in WIDTHS}
    result["widths"] = list(WIDTHS)
    result["goals"] = []
    return result
