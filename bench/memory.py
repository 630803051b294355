"""Memory (scenario 7): the bridge's RSS idle, and over time under overload.

The bridge runs as ``python -m bridge run`` (its own process, so the figure is the
bridge's, not this driver's) with a Kafka connector, the SQLite store with the
ledger on, and 4 handlers that each sleep 100 ms, with ``max_in_flight: 50``: it
can finish at most ~500 events/s while the producer here sends ``RATE`` per second.

* idle: RSS (psutil) once the bridge is ready and assigned, before any message.
* overload: RSS sampled every 250 ms while the producer outruns the handlers. With
  ``max_in_flight`` bounding the work in hand (the Kafka source pauses its
  partitions) memory must level off: the least-squares slope of the last half of
  the samples is compared with the first half's.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaProducer

from bench.brokers import KEYS, Tansu
from bench.common import Env, goal
from bench.payload import body
from tests.support import BridgeProcess

RATE = 2000
CONFIG = """\
version: 1
store: sqlite:///{db}
telemetry: {{logs: {{level: ERROR}}}}
events:
  subscriber/created: {{schema: "bench.payload:SubscriberCreated"}}
connectors:
  signups:
    type: kafka
    bootstrap_servers: {bootstrap}
    consume:
      topics: [{topic}]
      group_id: memory-{topic}
      start_from: earliest
      max_in_flight: 50
      session_timeout: 2s
      heartbeat_interval: 500ms
      event: {{type: subscriber/created}}
handlers:
{handlers}"""


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (MB/s) of (seconds, MB) points."""
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def produce(bootstrap: str, topic: str, rate: int, stop: asyncio.Event) -> int:
    """Send ``rate`` messages per second (in batches every 10 ms) until ``stop``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = 0
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not stop.is_set():
            due = int((loop.time() - start) * rate)
            while sent < due:
                await producer.send(topic, body(sent), key=f"customer-{sent % KEYS}".encode())
                sent += 1
            await asyncio.sleep(0.01)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def rss_mb(process: psutil.Process) -> float:
    return float(process.memory_info().rss) / 2**20


async def rss(env: Env) -> dict[str, Any]:
    """Scenario 7: idle RSS, then RSS over time under overload."""
    broker: Tansu = env.extra["tansu"]
    seconds = env.seconds(20.0, 3.0)
    topic = await broker.new_topic()
    workdir = Path(env.workdir) / f"memory-{time.time_ns()}"
    workdir.mkdir()
    handlers = "".join(
        f'  - {{id: slow{n}, on: subscriber/created, type: python, function: "bench.payload:slow"}}\n'
        for n in range(1, 5)
    )
    config = workdir / "bridge.yaml"
    config.write_text(
        CONFIG.format(
            db=workdir / "state.db", bootstrap=broker.bootstrap, topic=topic, handlers=handlers
        )
    )
    bridge = BridgeProcess(config, workdir)
    bridge.start()
    try:
        await bridge.wait_ready()
        assert bridge.proc is not None
        process = psutil.Process(bridge.proc.pid)
        await asyncio.sleep(env.seconds(3.0, 1.0))  # joined and assigned, imports settled
        idle_samples = []
        for _ in range(env.size(8, 3)):
            idle_samples.append(rss_mb(process))
            await asyncio.sleep(0.25)
        idle = statistics.median(idle_samples)
        stop = asyncio.Event()
        producer = asyncio.create_task(produce(broker.bootstrap, topic, RATE, stop))
        samples: list[tuple[float, float]] = []
        start = time.monotonic()
        while (now := time.monotonic() - start) < seconds:
            samples.append((round(now, 3), rss_mb(process)))
            await asyncio.sleep(0.25)
        stop.set()
        sent = await producer
        handled = await bridge.metric("bridge_runs_total") / 4
    finally:
        await bridge.stop()
    half = len(samples) // 2
    first, last = slope(samples[:half]), slope(samples[half:])
    return {
        "unit": "MB",
        "rss_mb": {
            "idle": idle,
            "overload_max": max(s[1] for s in samples),
            "overload_end": samples[-1][1],
        },
        "slope_mb_per_s": {"first_half": first, "last_half": last},
        "overload": {
            "seconds": seconds,
            "produced_per_s": RATE,
            "sent": sent,
            "handled_events": handled,
            "max_in_flight": 50,
            "handler_sleep_ms": 100,
        },
        "samples": samples,
        "variants": {},
        "ratios": {},
        "goals": [
            goal("memory: idle RSS (MB)", idle, "<=", 80.0),
            goal("memory: RSS slope, last half of overload (MB/s)", last, "<=", 0.5),
        ],
    }
