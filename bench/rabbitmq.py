"""RabbitMQ (scenario 2): the bridge vs raw aio-pika vs FastStream, same broker, same work.

Every variant drains a freshly preloaded durable queue (persistent messages) with
the same prefetch, does the same work per message (``bench.payload.work``) and acks
each message after it:

* ``raw``: ``queue.consume`` with a callback that does the work, then ``message.ack()``.
* ``faststream``: a ``RabbitBroker`` subscriber (pydantic-validated argument,
  ``asyncio.gather`` of the 4 handlers), ``AckPolicy.ACK``, same prefetch.
* ``bridge``: the in-process ``Runtime`` with the ``rabbitmq`` connector, ledger off.
* ``bridge_sqlite``: the same with the ledger on (SQLite, group commit).

Rates run from the first handler run to the last.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from bench.common import Env, Samples, goal
from bench.core import run_bridge
from bench.payload import HANDLERS, SubscriberCreated, Tally, body, bridge_config, reset, work

PREFETCH = 500
RABBIT_CONNECTOR = """\
    type: rabbitmq
    url: {url}
    consume:
      queue: {queue}
      max_in_flight: {prefetch}
      event: {{type: subscriber/created}}"""


async def new_queue(admin: AbstractConnection, count: int) -> str:
    """A new durable queue holding ``count`` persistent messages, confirmed by the broker."""
    name = f"bench.rabbitmq.{uuid.uuid4().hex[:8]}"
    async with admin.channel(publisher_confirms=True) as channel:
        await channel.declare_queue(name, durable=True)
        pending = []
        for n in range(count):
            message = aio_pika.Message(
                body(n),
                message_id=f"m{n}",
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            pending.append(channel.default_exchange.publish(message, routing_key=name))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    return name


async def raw(url: str, queue: str, events: int) -> Tally:
    tally = reset(events * 4)
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        q = await channel.declare_queue(queue, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            await work(message.body)
            await message.ack()

        await q.consume(on_message, no_ack=False)
        await asyncio.wait_for(tally.done.wait(), 600)
    finally:
        await connection.close()
    return tally


async def faststream(url: str, queue: str, events: int) -> Tally:
    from faststream import AckPolicy
    from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

    tally = reset(events * 4)
    broker = RabbitBroker(url, logger=None, default_channel=Channel(prefetch_count=PREFETCH))

    @broker.subscriber(RabbitQueue(queue, durable=True, declare=False), ack_policy=AckPolicy.ACK)  # type: ignore[misc]
    async def handle(data: SubscriberCreated) -> None:
        await asyncio.gather(*(h(data, None) for h in HANDLERS))

    await broker.start()
    try:
        await asyncio.wait_for(tally.done.wait(), 600)
    finally:
        await broker.stop()
    return tally


async def bridge(url: str, queue: str, events: int, store: str = "memory://") -> Tally:
    connector = RABBIT_CONNECTOR.format(url=url, queue=queue, prefetch=PREFETCH)
    return await run_bridge(bridge_config(connector, store=store), events * 4)


async def throughput(env: Env) -> dict[str, Any]:
    """Scenario 2: bridge vs raw aio-pika vs FastStream."""
    url = env.rabbitmq_url
    events = env.size(5_000, 300)
    variants: dict[str, Callable[[str], Awaitable[Tally]]] = {
        "raw": lambda q: raw(url, q, events),
        "bridge": lambda q: bridge(url, q, events),
        "faststream": lambda q: faststream(url, q, events),
        "bridge_sqlite": lambda q: bridge(
            url, q, events, f"sqlite:///{env.workdir}/rabbitmq-{time.time_ns()}.db"
        ),
    }
    if env.quick:  # the reference variant only in full runs
        del variants["bridge_sqlite"]
    samples = Samples(list(variants))
    admin = await aio_pika.connect(url)
    try:
        for run in range(env.runs):  # interleaved, so drift in machine load hits all alike
            for name, consume in variants.items():
                queue = await new_queue(admin, events)
                try:
                    samples.add(name, await consume(queue))
                finally:
                    async with admin.channel() as channel:
                        await channel.queue_delete(queue)
            samples.progress("rabbitmq", run)
    finally:
        await admin.close()
    result = samples.result(
        "msg/s",
        [("bridge", "raw"), ("bridge", "faststream"), ("bridge_sqlite", "raw")],
        messages_per_run=events,
        prefetch=PREFETCH,
        body_bytes=len(body(0)),
    )
    result["goals"] = [
        goal(
            "rabbitmq: bridge / raw aio-pika",
            result["ratios"]["bridge/raw"],
            ">=",
            0.7,
            "bridge/raw",
        ),
    ]
    return result
