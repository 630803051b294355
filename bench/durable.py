"""The durable path on the memory connector: what the ledger costs, in throughput and latency.

The bridge is fed by the in-process memory connector (4 no-op handlers), so the
figures are the engine's and the store's, not a broker's. Variants:

* ``bare``: the same work without the bridge (decode, validate, gather).
* ``ledger_off``: the bridge with the memory store and the ledger off.
* ``sqlite``: the ledger on SQLite (the default store).
* ``postgres``: the ledger on PostgreSQL (127.0.0.1:5432, a schema of its own per run).

``bridge_throughput`` feeds ``python -m bench.profile`` (the throughput table is the
``ledger`` scenario, run with ``tuned_gc``). ``latency``: at a steady 1,000 events/s, produce → first handler and produce →
settled (acked), p50 / p99 per variant; "added" is the bridge's p99 minus the bare
loop's (for the bare loop, settled is the end of its work).

Both run with the garbage collector tuned as ``bridge run`` tunes its own
process (``tune_gc``: start-up objects frozen, thresholds 100,000/50/100), for the
bare loop and the bridge alike; the settings are restored afterwards. Each run starts
with what earlier runs left frozen, as a fresh ``bridge run`` has none of it
(``bench.payload.reset``): an earlier run's garbage is not walked inside a later one's
timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bench.common import Env, goal, spread_ms
from bench.core import memory_config, run_bridge
from bench.payload import Tally, body, reset, work
from bridge.app.runtime import tune_gc
from connectors.memory import BROKER

POSTGRES_URL = os.environ.get(
    "BRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RATE = 1000
VARIANTS = ("bare", "ledger_off", "sqlite", "postgres")
GC = (
    "tuned as `bridge run` does (gc.freeze() after start-up, thresholds 100,000/50/100);"
    " each run starts with what earlier runs left frozen (bench.payload.reset)"
)


def tuned_gc(
    scenario: Callable[[Env], Awaitable[dict[str, Any]]],
) -> Callable[[Env], Awaitable[dict[str, Any]]]:
    """Run ``scenario`` with the collector tuned as ``bridge run`` tunes its process."""

    @functools.wraps(scenario)
    async def tuned(env: Env) -> dict[str, Any]:
        thresholds = gc.get_threshold()
        tune_gc()
        try:
            return {**await scenario(env), "gc": GC}
        finally:
            gc.unfreeze()
            gc.set_threshold(*thresholds)

    return tuned


@contextlib.asynccontextmanager
async def store_url(variant: str, env: Env) -> AsyncIterator[str]:
    """The store of a bridge variant; a PostgreSQL schema is dropped afterwards."""
    if variant == "ledger_off":
        yield "memory://"
    elif variant == "sqlite":
        yield f"sqlite:///{env.workdir}/durable-{time.time_ns()}.db"
    else:
        import asyncpg

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            yield f"{POSTGRES_URL}?schema={schema}"
        finally:
            conn = await asyncpg.connect(POSTGRES_URL)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            finally:
                await conn.close()


async def bare_throughput(bodies: list[bytes]) -> Tally:
    tally = reset(len(bodies) * 4)
    for raw in bodies:
        await work(raw)
    return tally


async def bridge_throughput(variant: str, env: Env, bodies: list[bytes]) -> Tally:
    async with store_url(variant, env) as store:
        topic, config = memory_config(store=store)

        def feed() -> None:
            for raw in bodies:
                BROKER.put(topic, raw)

        return await run_bridge(config, len(bodies) * 4, feed=feed)


# --------------------------------------------------------------------------- latency


async def steady(
    count: int, send: Callable[[bytes], None], acked: Callable[[], int]
) -> tuple[list[int], list[int]]:
    """Send ``count`` bodies at ``RATE`` per second, each stamped as it is sent; then wait
    until all are acked. Returns (send times, ack times) in ns: the n-th ack's time is when
    the ack count was first seen above n (polled at each send, then every 0.5 ms)."""
    loop = asyncio.get_running_loop()
    sent: list[int] = []
    acks: list[int] = []

    def look() -> None:
        now = time.time_ns()
        while len(acks) < acked():
            acks.append(now)

    start = loop.time()
    for n in range(count):
        delay = start + n / RATE - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        look()
        stamp = time.time_ns()
        sent.append(stamp)
        send(body(n, stamp))
    ends = loop.time() + 60
    while len(acks) < count and loop.time() < ends:
        await asyncio.sleep(0.0005)
        look()
    return sent, acks


async def bare_latency(count: int) -> tuple[Tally, list[int], list[int]]:
    """The bare loop fed through a queue by the same steady sender."""
    tally = reset(count * 4, latency=True)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    done = [0]

    async def consume() -> None:
        while done[0] < count:
            await work(await queue.get())
            done[0] += 1

    consumer = asyncio.create_task(consume())
    sent, acks = await steady(count, queue.put_nowait, lambda: done[0])
    await consumer
    return tally, sent, acks


async def bridge_latency(variant: str, env: Env, count: int) -> tuple[Tally, list[int], list[int]]:
    async with store_url(variant, env) as store:
        topic, config = memory_config(store=store)
        topic_state = BROKER.topic(topic)
        out: dict[str, Any] = {}

        async def feed() -> None:
            out["sent"], out["acks"] = await steady(
                count, lambda raw: BROKER.put(topic, raw), lambda: topic_state.acked
            )

        async def until() -> None:
            await out["task"]

        def start() -> None:
            out["task"] = asyncio.ensure_future(feed())

        tally = await run_bridge(config, count * 4, feed=start, latency=True, until=until)
        return tally, out["sent"], out["acks"]


def spread(tally: Tally, sent: list[int], acks: list[int]) -> dict[str, Any]:
    warm = min(RATE // 2, len(sent) // 4)  # the first half second warms up
    settled = [a - s for s, a in zip(sent[warm:], acks[warm:], strict=False)]
    return {"handler": spread_ms(tally.latencies_ns[warm:]), "settled": spread_ms(settled)}


@tuned_gc
async def latency(env: Env) -> dict[str, Any]:
    """p50 / p99 produce → first handler and produce → settled at 1,000 events/s."""
    seconds = env.seconds(5.0, 1.0)
    count = int(RATE * seconds)
    for variant in VARIANTS[1:]:
        await bridge_latency(variant, env, 200)  # warm up
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for _ in range(env.runs):
        for variant in VARIANTS:
            measure: Awaitable[tuple[Tally, list[int], list[int]]] = (
                bare_latency(count) if variant == "bare" else bridge_latency(variant, env, count)
            )
            runs[variant].append(spread(*await measure))
        print(
            "  latency p99 (handler/settled ms): "
            + ", ".join(
                f"{v} {r[-1]['handler']['p99_ms']:.1f}/{r[-1]['settled']['p99_ms']:.1f}"
                for v, r in runs.items()
            ),
            flush=True,
        )

    def med(variant: str, what: str, key: str) -> float:
        return statistics.median(r[what][key] for r in runs[variant])

    variants = {
        v: {
            f"{what}_{key}": med(v, what, key)
            for what in ("handler", "settled")
            for key in ("p50_ms", "p99_ms")
        }
        | {"runs": runs[v]}
        for v in VARIANTS
    }
    added = {
        v: {
            what: variants[v][f"{what}_p99_ms"] - variants["bare"][f"{what}_p99_ms"]
            for what in ("handler", "settled")
        }
        for v in VARIANTS[1:]
    }
    return {
        "unit": "ms",
        "rate_per_s": RATE,
        "seconds": seconds,
        "variants": variants,
        "added_ms": added,
        "ratios": {},
        "goals": [
            goal(
                f"durable latency: added p99, {label} (ms)",
                added[variant]["handler"],
                "<=",
                most,
                rounds=added_each_run(runs, variant),
            )
            for variant, label, most in (
                ("sqlite", "SQLite", 5.0),
                ("postgres", "PostgreSQL", 10.0),
            )
        ],
    }


def added_each_run(runs: dict[str, list[dict[str, Any]]], variant: str) -> list[float]:
    """The added handler p99 of ``variant`` in each round, over the bare loop's p99 of the
    same round (the goal reads the medians)."""
    return [
        r["handler"]["p99_ms"] - b["handler"]["p99_ms"]
        for r, b in zip(runs[variant], runs["bare"], strict=False)
    ]
