"""Redis Streams: the bridge vs raw redis-py vs FastStream, same server, same work.

Every variant drains a freshly filled stream through a consumer group created at
``0``, at most ``IN_FLIGHT`` entries at once, does the same work per entry
(``bench.payload.work``: decode, validate, 4 handlers) and acks each entry after it:

* ``raw``: XREADGROUP batches (COUNT up to the free slots), a task per entry doing
  the work, then XACK of that entry (a pool of redis-py's default 100 connections,
  waiting for a free one).
* ``faststream``: a ``RedisBroker`` stream subscriber in the group (pydantic-validated
  argument, ``asyncio.gather`` of the 4 handlers), ``AckPolicy.ACK`` (XACK after the
  work), ``max_records=IN_FLIGHT``.
* ``bridge``: the in-process ``Runtime`` with the ``redis`` connector, ledger off.
* ``bridge_sqlite``: the same with the ledger on (SQLite, group commit).

Rates run from the first handler run to the last.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis

from bench.common import Env, Samples, goal
from bench.core import run_bridge
from bench.payload import HANDLERS, SubscriberCreated, Tally, body, bridge_config, reset, work

URL = "redis://127.0.0.1:6379/0"
GROUP = "bench"
IN_FLIGHT = 500
REDIS_CONNECTOR = """\
    type: redis
    url: {url}
    consume:
      stream: {stream}
      group: {group}
      max_in_flight: {in_flight}
      event: {{type: subscriber/created}}"""


async def new_stream(admin: Redis, count: int) -> str:
    """A new stream holding ``count`` entries (``data`` field), with the group at ``0``."""
    name = f"bench.redis.{uuid.uuid4().hex[:8]}"
    await admin.xgroup_create(name, GROUP, id="0", mkstream=True)
    for start in range(0, count, 1000):
        pipe = admin.pipeline(transaction=False)
        for n in range(start, min(start + 1000, count)):
            pipe.xadd(name, {"data": body(n)})
        await pipe.execute()
    return name


async def raw(url: str, stream: str, events: int) -> Tally:
    tally = reset(events * 4)
    client = Redis(connection_pool=BlockingConnectionPool.from_url(url, max_connections=100))
    client.auto_close_connection_pool = True
    slots = asyncio.Semaphore(IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            await work(fields[b"data"])
            await client.xack(stream, GROUP, entry_id)
        finally:
            slots.release()

    async def consume() -> None:
        while True:
            await slots.acquire()
            free = 1
            while free < IN_FLIGHT and not slots.locked():
                await slots.acquire()
                free += 1
            reply = await client.xreadgroup(GROUP, "raw", {stream: ">"}, count=free, block=1000)
            entries = [e for _, batch in reply or () for e in batch]
            for _ in range(free - len(entries)):
                slots.release()
            for entry_id, fields in entries:
                task = asyncio.create_task(handle(entry_id, fields))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    reader = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(tally.done.wait(), 600)
    finally:
        reader.cancel()
        await asyncio.gather(reader, *tasks, return_exceptions=True)
        await client.aclose()
    return tally


async def faststream(url: str, stream: str, events: int) -> Tally:
    from faststream import AckPolicy
    from faststream.redis import RedisBroker, StreamSub

    tally = reset(events * 4)
    broker = RedisBroker(url, logger=None)
    sub = StreamSub(stream, group=GROUP, consumer="faststream", max_records=IN_FLIGHT)

    @broker.subscriber(stream=sub, ack_policy=AckPolicy.ACK)  # type: ignore[misc]
    async def handle(data: SubscriberCreated) -> None:
        await asyncio.gather(*(h(data, None) for h in HANDLERS))

    await broker.start()
    try:
        await asyncio.wait_for(tally.done.wait(), 600)
    finally:
        await broker.stop()
    return tally


async def bridge(url: str, stream: str, events: int, store: str = "memory://") -> Tally:
    connector = REDIS_CONNECTOR.format(url=url, stream=stream, group=GROUP, in_flight=IN_FLIGHT)
    return await run_bridge(bridge_config(connector, store=store), events * 4)


async def throughput(env: Env) -> dict[str, Any]:
    """Redis Streams: bridge vs raw redis-py vs FastStream."""
    url = env.extra.get("redis_url", URL)
    events = env.size(5_000, 300)
    variants: dict[str, Callable[[str], Awaitable[Tally]]] = {
        "raw": lambda s: raw(url, s, events),
        "bridge": lambda s: bridge(url, s, events),
        "faststream": lambda s: faststream(url, s, events),
        "bridge_sqlite": lambda s: bridge(
            url, s, events, f"sqlite:///{env.workdir}/redis-{time.time_ns()}.db"
        ),
    }
    if env.quick:  # the reference variant only in full runs
        del variants["bridge_sqlite"]
    samples = Samples(list(variants))
    admin = Redis.from_url(url)
    try:
        for run in range(env.runs):  # interleaved, so drift in machine load hits all alike
            for name, consume in variants.items():
                stream = await new_stream(admin, events)
                try:
                    samples.add(name, await consume(stream))
                finally:
                    await admin.delete(stream)
            samples.progress("redis", run)
    finally:
        await admin.aclose()
    result = samples.result(
        "msg/s",
        [("bridge", "raw"), ("bridge", "faststream"), ("bridge_sqlite", "raw")],
        messages_per_run=events,
        in_flight=IN_FLIGHT,
        body_bytes=len(body(0)),
    )
    result["goals"] = [
        goal(
            "redis: bridge / raw redis-py", result["ratios"]["bridge/raw"], ">=", 0.6, "bridge/raw"
        ),
        goal(
            "redis: bridge / FastStream",
            result["ratios"]["bridge/faststream"],
            ">=",
            2.0,
            "bridge/faststream",
        ),
    ]
    return result
