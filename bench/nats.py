"""NATS JetStream: the bridge vs raw nats-py vs FastStream, same server, same work.

Every variant drains a freshly preloaded file-storage stream through a durable pull
consumer of its own, with at most ``IN_FLIGHT`` messages unacked, does the same work
per message (``bench.payload.work``) and acks each message after it:

* ``raw``: nats-py ``pull_subscribe`` + ``fetch`` batches; each message's work runs
  as a task (at most ``IN_FLIGHT`` at once), then ``msg.ack()``.
* ``faststream``: a ``NatsBroker`` pull subscriber (``PullSub``, pydantic-validated
  argument, ``asyncio.gather`` of the 4 handlers), ``AckPolicy.ACK``,
  ``max_workers=IN_FLIGHT``.
* ``bridge``: the in-process ``Runtime`` with the ``nats`` connector, ledger off.
* ``bridge_sqlite``: the same with the ledger on (SQLite, group commit).

Rates run from the first handler run to the last.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from bench.common import Env, Samples, goal
from bench.core import run_bridge
from bench.payload import HANDLERS, SubscriberCreated, Tally, body, bridge_config, reset, work

URL = "nats://127.0.0.1:4222"
IN_FLIGHT = 500
BATCH = 100
NATS_CONNECTOR = """\
    type: nats
    servers: [{url}]
    consume:
      stream: {stream}
      durable: bridge
      subjects: [{subject}]
      declare: {{}}
      max_in_flight: {in_flight}
      fetch_batch: {batch}
      event: {{type: subscriber/created}}"""


async def new_stream(js: Any, count: int) -> tuple[str, str]:
    """A new file-storage stream holding ``count`` messages, each with a publish ack."""
    token = uuid.uuid4().hex[:8]
    stream, subject = f"BENCH_{token}", f"bench.nats.{token}"
    await js.add_stream(StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE))
    for start in range(0, count, 1000):
        await asyncio.gather(
            *(
                js.publish(subject, body(n), headers={"content-type": "application/json"})
                for n in range(start, min(start + 1000, count))
            )
        )
    return stream, subject


async def raw(stream: str, subject: str, events: int) -> Tally:
    tally = reset(events * 4)
    nc = await nats.connect(URL)
    try:
        js = nc.jetstream()
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name="raw", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=IN_FLIGHT
            ),
        )
        sub = await js.pull_subscribe_bind(durable="raw", stream=stream)
        slots = asyncio.Semaphore(IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()

        async def handle(msg: Any) -> None:
            try:
                await work(msg.data)
                await msg.ack()
            finally:
                slots.release()

        while not tally.done.is_set():
            try:
                msgs = await sub.fetch(BATCH, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in msgs:
                await slots.acquire()
                task = asyncio.create_task(handle(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    finally:
        await nc.close()
    return tally


async def faststream(stream: str, subject: str, events: int) -> Tally:
    from faststream import AckPolicy as FsAck
    from faststream.nats import JStream, NatsBroker, PullSub

    tally = reset(events * 4)
    broker = NatsBroker(URL, logger=None)

    @broker.subscriber(  # type: ignore[misc]
        subject,
        stream=JStream(stream, declare=False),
        durable="faststream",
        pull_sub=PullSub(batch_size=BATCH),
        max_workers=IN_FLIGHT,
        ack_policy=FsAck.ACK,
    )
    async def handle(data: SubscriberCreated) -> None:
        await asyncio.gather(*(h(data, None) for h in HANDLERS))

    await broker.start()
    try:
        await asyncio.wait_for(tally.done.wait(), 600)
    finally:
        await broker.stop()
    return tally


async def bridge(stream: str, subject: str, events: int, store: str = "memory://") -> Tally:
    connector = NATS_CONNECTOR.format(
        url=URL, stream=stream, subject=subject, in_flight=IN_FLIGHT, batch=BATCH
    )
    return await run_bridge(bridge_config(connector, store=store), events * 4)


async def throughput(env: Env) -> dict[str, Any]:
    """Scenario: bridge vs raw nats-py vs FastStream on NATS JetStream."""
    events = env.size(5_000, 300)
    variants: dict[str, Callable[[str, str], Awaitable[Tally]]] = {
        "raw": lambda s, j: raw(s, j, events),
        "bridge": lambda s, j: bridge(s, j, events),
        "faststream": lambda s, j: faststream(s, j, events),
        "bridge_sqlite": lambda s, j: bridge(
            s, j, events, f"sqlite:///{env.workdir}/nats-{time.time_ns()}.db"
        ),
    }
    if env.quick:  # the reference variant only in full runs
        del variants["bridge_sqlite"]
    samples = Samples(list(variants))
    nc = await nats.connect(URL)
    js = nc.jetstream()
    try:
        for run in range(env.runs):  # interleaved, so drift in machine load hits all alike
            for name, consume in variants.items():
                stream, subject = await new_stream(js, events)
                try:
                    samples.add(name, await consume(stream, subject))
                finally:
                    await js.delete_stream(stream)
            samples.progress("nats", run)
    finally:
        await nc.close()
    result = samples.result(
        "msg/s",
        [("bridge", "raw"), ("bridge", "faststream"), ("bridge_sqlite", "raw")],
        messages_per_run=events,
        in_flight=IN_FLIGHT,
        body_bytes=len(body(0)),
    )
    result["goals"] = [
        goal("nats: bridge / raw nats-py", result["ratios"]["bridge/raw"], ">=", 0.6, "bridge/raw"),
        goal(
            "nats: bridge / FastStream",
            result["ratios"]["bridge/faststream"],
            ">=",
            2.0,
            "bridge/faststream",
        ),
    ]
    return result
