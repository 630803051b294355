"""Store round trips per run of each flow control, on PostgreSQL (or any store URL).

``python -m bench.flow_cost [STORE_URL]``: for each control, 400 events (8 keys) go
through the real dispatcher, 50 at a time (as a busy source hands them out), and the
flow-state calls the store made (``bridge_store_round_trips_total`` by operation) are
divided by the runs. Prints one JSON line per control. The default store is a fresh
schema on the local PostgreSQL.

``throttle_queued``: a throttle of 20/s per key (50 runs per key: 2.5 s of starts), all
400 events handed out at once, with ``inline_retry_limit: 0s``, so that every run more
than 1.5 s from its start time is queued in the store; a ``ParkedSource`` (the scheduler) brings them back. Its figure
counts the parked-run calls (put, claim, renew, done) as well as the flow-state ones.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from typing import Any

import orjson

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.normalize import Normalizer
from bridge.scheduler import ParkedSource
from bridge.store import create_store
from bridge.transport import Delivery, EventMapping, Settlement

EVENTS = 400
KEYS = 8
CONCURRENT = 50
CONTROLS = {
    "throttle": 'throttle: {limit: 100000, period: 1s, burst: 100, key: "event.data.k"}',
    "rate_limit_skip": 'rate_limit: {count: 100000, per: 1s, mode: skip, key: "event.data.k"}',
    "debounce": 'debounce: {period: 10ms, key: "event.id"}',
    "idempotency": 'idempotency: {key: "event.id", ttl: 1h}',
    "singleton": 'singleton: {key: "event.id", mode: skip}',
    "throttle_queued": 'throttle: {limit: 20, period: 1s, key: "event.data.k"}',
}
QUEUED = "throttle_queued"
RAN: list[int] = [0]


async def ok(event: Any, ctx: Any) -> None:
    RAN[0] += 1


def counted(store: Any, queued: bool) -> dict[str, float]:
    """The store's flow-state round trips by operation (and parked-run ones if ``queued``)."""
    prefixes = ("flow_", "parked_") if queued else ("flow_",)
    return {k: v for k, v in store.round_trips.items() if k.startswith(prefixes)}


async def drain(dispatcher: Any, store: Any, runtime: Runtime) -> None:
    """Run the queued runs as the scheduler does, until every event ran."""
    source = ParkedSource(store, poll_interval=0.2)
    await source.start()
    norm = Normalizer("scheduler", "inbox", EventMapping(), runtime.catalog, 10_000)
    tasks: set[asyncio.Task[None]] = set()

    async def one(delivery: Delivery) -> None:
        await delivery.settle(await dispatcher.process(delivery, norm))

    async def consume() -> None:
        async for delivery in source.deliveries():
            task = asyncio.create_task(one(delivery))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    consumer = asyncio.create_task(consume())
    while RAN[0] < EVENTS:
        await asyncio.sleep(0.1)
    await source.stop(0)
    consumer.cancel()
    await asyncio.gather(consumer, *tasks, return_exceptions=True)


async def measure(url: str, name: str, control: str) -> dict[str, Any]:
    text = textwrap.dedent(
        f"""\
        version: 1
        store: memory://
        server: {{enabled: false}}
        ledger: false
        defaults: {{inline_retry_limit: {"0s" if name == QUEUED else "30s"}}}
        events: {{"b/*": {{schema: none}}}}
        handlers:
          - id: h
            on: b/e
            type: python
            function: bench.flow_cost:ok
            {control}
        """
    )
    cfg = load_config_text(text, {})
    store = create_store(url)
    await store.open()
    runtime = Runtime(cfg, store=store)
    runtime.build()
    dispatcher = runtime.dispatcher
    assert dispatcher is not None
    norm = Normalizer("bench", "memory", EventMapping(type="b/e"), runtime.catalog, 10_000)
    queued = name == QUEUED
    RAN[0] = 0
    before = sum(counted(store, queued).values())
    limit = asyncio.Semaphore(EVENTS if queued else CONCURRENT)

    async def one(i: int) -> Settlement:
        body = orjson.dumps(
            {
                "specversion": "1.0",
                "id": f"{name}-{i}",
                "source": "b",
                "type": "b/e",
                "data": {"k": i % KEYS},
            }
        )

        async def settle(_: Settlement) -> None:
            return None

        async with limit:
            return await dispatcher.process(Delivery(body, {}, {}, settle, "bench"), norm)

    await asyncio.gather(*(one(i) for i in range(EVENTS)))
    if queued:
        await drain(dispatcher, store, runtime)
    used = counted(store, queued)
    await dispatcher.close()
    await store.close()
    total = sum(used.values()) - before
    return {
        "control": name,
        "runs": EVENTS,
        "round_trips": total,
        "per_run": round(total / EVENTS, 3),
        "queued": sum(
            v for (n, _), v in runtime.metrics.counters.items() if n == "bridge_runs_queued_total"
        ),
        "by_operation": used,
    }


async def main(url: str) -> None:
    for name, control in CONTROLS.items():
        print(orjson.dumps(await measure(url, name, control)).decode())


async def fresh_schema() -> None:
    """Measure on a schema of its own on the local PostgreSQL, dropped afterwards."""
    import asyncpg

    server = "postgresql://postgres@127.0.0.1:5432/postgres"
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    try:
        await main(f"{server}?schema={schema}")
    finally:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]) if len(sys.argv) > 1 else fresh_schema())
