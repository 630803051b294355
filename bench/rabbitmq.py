"""RabbitMQ consume: the bridge against a raw aio-pika consumer, same broker, one run.

Both drain the same kind of preloaded queue with the same prefetch and manual acks:
    * raw: ``queue.consume`` with a callback that acks each message.
    * bridge: the in-process ``Runtime`` with the ``rabbitmq`` connector; each body
      is validated (``bench.payload:SubscriberCreated``) and fanned out to the 4
      no-op handlers of ``bench.payload``; acked when all 4 runs are final. Once
      with the ledger off (memory store) and once with the ledger on (SQLite,
      group commit), the at-least-once dedupe that production runs with.
      The connector consumes on aiormq's channel and writes the acks of one
      event-loop turn together (one ``basic.ack(multiple)`` for a settled
      prefix); the raw consumer acks one message at a time, as a plain
      aio-pika consumer does.

Throughput: ``--messages`` preloaded messages, first delivery to last ack,
``--runs`` runs of each variant interleaved (machine load drifts alike), medians.
Latency: ``--latency-messages`` published at a steady ``--rate`` per second while
consuming; publish to ack, p50/p90/p99. Run ``python -m bench.rabbitmq`` with
RabbitMQ on 127.0.0.1:5672; writes bench/results/rabbitmq.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from bench.common import percentile, summary, write
from bench.payload import body, bridge_config
from bridge.config import load_config_text
from bridge.runtime import Runtime
from connectors.base import Delivery, Settlement, Source

URL = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")

RABBIT_CONNECTOR = """\
    type: rabbitmq
    url: {url}
    consume:
      queue: {queue}
      max_in_flight: {prefetch}
      event: {{type: subscriber/created}}
"""


class Clock:
    """First delivery, last ack and per-message latency of one run."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.acked = 0
        self.first: float | None = None
        self.last = 0.0
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    def delivered(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def ack(self, sent: str | None) -> None:
        now = time.monotonic()
        if sent is not None:
            self.latencies.append(now - float(sent))
        self.acked += 1
        if self.acked >= self.expected:
            self.last = now
            self.done.set()

    def rate(self) -> float:
        return self.expected / (self.last - (self.first or self.last))


class Counted:
    """Wraps the bridge's source to time its deliveries and acks (the bench's only probe)."""

    def __init__(self, source: Source, clock: Clock) -> None:
        self.source = source
        self.clock = clock

    async def start(self) -> None:
        await self.source.start()

    async def stop(self, deadline: float) -> None:
        await self.source.stop(deadline)

    def status(self) -> Any:
        return self.source.status()  # type: ignore[attr-defined]

    async def deliveries(self) -> AsyncIterator[Delivery]:
        clock = self.clock
        async for delivery in self.source.deliveries():
            clock.delivered()
            yield dataclasses.replace(delivery, settle=self._timed(delivery))

    def _timed(self, delivery: Delivery) -> Any:
        async def settle(outcome: Settlement) -> None:
            await delivery.settle(outcome)
            if outcome is Settlement.ACK:
                self.clock.ack(delivery.headers.get("x-sent"))

        return settle


# --------------------------------------------------------------------------- broker


async def new_queue(admin: AbstractConnection) -> str:
    name = f"bench.rabbitmq.{uuid.uuid4().hex[:8]}"
    async with admin.channel() as channel:
        await channel.declare_queue(name, durable=True)
    return name


async def delete_queue(admin: AbstractConnection, name: str) -> None:
    async with admin.channel() as channel:
        await channel.queue_delete(name)


async def preload(admin: AbstractConnection, queue: str, count: int) -> None:
    """``count`` persistent messages, confirmed by the broker."""
    async with admin.channel(publisher_confirms=True) as channel:
        pending = []
        for n in range(count):
            message = aio_pika.Message(
                body(n),
                message_id=f"m{n}",
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            pending.append(channel.default_exchange.publish(message, routing_key=queue))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)


async def steady(admin: AbstractConnection, queue: str, count: int, rate: float) -> None:
    """Publish ``count`` messages at ``rate`` per second, each stamped ``x-sent``."""
    async with admin.channel(publisher_confirms=False) as channel:
        start = time.monotonic()
        for n in range(count):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            message = aio_pika.Message(
                body(n),
                message_id=f"l{n}",
                content_type="application/json",
                headers={"x-sent": repr(time.monotonic())},
            )
            await channel.default_exchange.publish(message, routing_key=queue)


# --------------------------------------------------------------------------- consumers


async def raw(queue: str, clock: Clock, prefetch: int, publish: Awaitable[None] | None) -> None:
    connection = await aio_pika.connect_robust(URL)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        q = await channel.declare_queue(queue, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            clock.delivered()
            await message.ack()
            sent = (message.headers or {}).get("x-sent")
            clock.ack(str(sent) if sent is not None else None)

        await q.consume(on_message, no_ack=False)
        if publish is not None:
            await publish
        await clock.done.wait()
    finally:
        await connection.close()


async def bridge(
    queue: str, clock: Clock, prefetch: int, publish: Awaitable[None] | None, store: str
) -> None:
    connector = RABBIT_CONNECTOR.format(url=URL, queue=queue, prefetch=prefetch)
    text = bridge_config(connector, store=store, ledger=store != "memory://")
    runtime = Runtime(load_config_text(text, {}))
    runtime.build()
    (slot,) = runtime.slots
    slot.source = Counted(slot.source, clock)
    running = asyncio.create_task(runtime.run())
    try:
        if publish is not None:
            await publish
        await asyncio.wait(
            (running, asyncio.ensure_future(clock.done.wait())), return_when="FIRST_COMPLETED"
        )
        if running.done():
            running.result()  # surface a crash instead of waiting for ever
    finally:
        runtime.request_stop()
        await running


# --------------------------------------------------------------------------- driver


async def main(
    messages: int, runs: int, prefetch: int, latency_messages: int, rate: float
) -> dict[str, Any]:
    load_before = os.getloadavg()
    admin = await aio_pika.connect(URL)
    server = admin.transport.connection.server_properties if admin.transport else {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-rabbitmq-"))
    variants = {
        "raw": lambda q, c, p: raw(q, c, prefetch, p),
        "bridge_ledger_off": lambda q, c, p: bridge(q, c, prefetch, p, "memory://"),
        "bridge_ledger_on": lambda q, c, p: bridge(
            q, c, prefetch, p, f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    latency: dict[str, dict[str, float]] = {}
    try:
        for run in range(runs):
            for name, consume in variants.items():
                queue = await new_queue(admin)
                await preload(admin, queue, messages)
                clock = Clock(messages)
                await consume(queue, clock, None)
                await delete_queue(admin, queue)
                rates[name].append(clock.rate())
                print(f"run {run + 1}/{runs}  {name:18s} {clock.rate():8,.0f} msg/s", flush=True)
        for name, consume in variants.items():
            queue = await new_queue(admin)
            clock = Clock(latency_messages)
            await consume(queue, clock, steady(admin, queue, latency_messages, rate))
            await delete_queue(admin, queue)
            ms = [s * 1000 for s in clock.latencies]
            latency[name] = {
                "p50_ms": round(percentile(ms, 0.50), 2),
                "p90_ms": round(percentile(ms, 0.90), 2),
                "p99_ms": round(percentile(ms, 0.99), 2),
                "max_ms": round(max(ms), 2),
            }
            print(f"latency {name:18s} {latency[name]}", flush=True)
    finally:
        await admin.close()
    throughput = {name: summary(values) for name, values in rates.items()}
    base = throughput["raw"]["median"]
    ratios = {name: round(s["median"] / base, 3) for name, s in throughput.items() if name != "raw"}
    # Each run's variants ran back to back: their ratio is less exposed to drifting load.
    paired = {
        name: round(statistics.median(b / r for b, r in zip(values, rates["raw"], strict=True)), 3)
        for name, values in rates.items()
        if name != "raw"
    }
    version = server.get("version")
    return {
        "what": "bridge (validation, 4 no-op handlers, manual acks) vs raw aio-pika consumer, "
        "same prefetch and manual acks",
        "broker": {
            "rabbitmq": version.decode() if isinstance(version, bytes) else str(version),
            "aio_pika": aio_pika.__version__,
            "url": "127.0.0.1:5672 (same machine)",
        },
        "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        "messages_per_run": messages,
        "prefetch": prefetch,
        "body_bytes": len(body(0)),
        "throughput_msgs_per_s": throughput,
        "ratio_to_raw": ratios,
        "ratio_to_raw_paired_median": paired,
        "goal": "bridge >= 0.7 x raw aio-pika",
        "goal_met": {name: ratio >= 0.7 for name, ratio in ratios.items()},
        "latency_publish_to_ack": {
            "messages": latency_messages,
            "rate_per_s": rate,
            **latency,
        },
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=500)
    parser.add_argument("--latency-messages", type=int, default=3_000)
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args()
    result = asyncio.run(
        main(args.messages, args.runs, args.prefetch, args.latency_messages, args.rate)
    )
    path = write("rabbitmq", result)
    for name, stats in result["throughput_msgs_per_s"].items():
        ratio = result["ratio_to_raw"].get(name)
        extra = f"  ratio {ratio:.2f}" if ratio is not None else ""
        print(f"{name:18s} {stats['median']:>9,.0f} msg/s (median){extra}")
    print(f"-> {path}")


if __name__ == "__main__":
    cli()
