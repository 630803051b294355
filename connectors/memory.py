"""``type: memory``: an in-process broker. A real implementation of the Source and
Publisher contracts (not a mock), for tests, examples and benchmarks.

Topics live in a ``MemoryBroker``; by default every connector shares the
process-wide one, so a ``publish`` handler on one memory connector feeds the
source of another. ``RETRY_LATER`` puts the message back at the end of its topic.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from bridge.transport import ConnectorConfig, ConnectorStatus, Delivery, Settlement


class MemoryConfig(ConnectorConfig):
    """An in-process topic."""

    type: Literal["memory"] = Field("memory", description="Connector kind: an in-process topic.")
    topic: str | None = Field(None, description="Topic to consume; default the connector's name.")


@dataclass(slots=True)
class MemoryMessage:
    body: bytes
    headers: Mapping[str, str]
    key: str | None
    offset: int
    redelivered: int = 0


@dataclass
class Topic:
    queue: asyncio.Queue[MemoryMessage] = field(default_factory=asyncio.Queue)
    offsets: itertools.count[int] = field(default_factory=itertools.count)
    acked: int = 0
    retried: int = 0
    published: int = 0


class MemoryBroker:
    """Named in-process topics."""

    def __init__(self) -> None:
        self.topics: dict[str, Topic] = {}

    def topic(self, name: str) -> Topic:
        found = self.topics.get(name)
        if found is None:
            found = self.topics[name] = Topic()
        return found

    def put(
        self,
        name: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
    ) -> None:
        """Append a message to a topic (synchronously)."""
        topic = self.topic(name)
        topic.published += 1
        topic.queue.put_nowait(MemoryMessage(body, dict(headers or {}), key, next(topic.offsets)))


BROKER = MemoryBroker()


class MemorySource:
    """Consumes one topic of a ``MemoryBroker``."""

    def __init__(self, cfg: MemoryConfig, name: str, broker: MemoryBroker | None = None) -> None:
        self.name = name
        self.topic_name = cfg.topic or name
        self.broker = broker or BROKER
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        self._stopped.clear()

    async def deliveries(self) -> AsyncIterator[Delivery]:
        topic = self.broker.topic(self.topic_name)
        stop = asyncio.ensure_future(self._stopped.wait())
        try:
            while not self._stopped.is_set():
                if topic.queue.empty():
                    getter = asyncio.ensure_future(topic.queue.get())
                    await asyncio.wait((getter, stop), return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        break
                    message = getter.result()
                else:
                    message = topic.queue.get_nowait()
                yield self._delivery(topic, message)
        finally:
            stop.cancel()

    def _delivery(self, topic: Topic, message: MemoryMessage) -> Delivery:
        async def settle(outcome: Settlement) -> None:
            if outcome is Settlement.ACK:
                topic.acked += 1
            else:
                topic.retried += 1
                message.redelivered += 1
                topic.queue.put_nowait(message)

        meta: dict[str, Any] = {
            "topic": self.topic_name,
            "offset": message.offset,
            "message_id": f"{self.topic_name}-{message.offset}",
            "redelivered": message.redelivered,
        }
        if message.key is not None:
            meta["key"] = message.key
        return Delivery(message.body, message.headers, meta, settle, self.name)

    async def stop(self, deadline: float) -> None:
        self._stopped.set()

    def status(self) -> ConnectorStatus:
        topic = self.broker.topic(self.topic_name)
        return ConnectorStatus(True, lag={self.topic_name: float(topic.queue.qsize())})


class MemoryPublisher:
    """Publishes into topics of a ``MemoryBroker``; the destination is the topic name."""

    ce_prefix = "ce-"

    def __init__(self, cfg: MemoryConfig, name: str, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or BROKER

    async def publish(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None
    ) -> None:
        self.broker.put(destination, body, headers, key)

    async def close(self) -> None:
        return None


def source(cfg: MemoryConfig, name: str) -> MemorySource:
    return MemorySource(cfg, name)


def publisher(cfg: MemoryConfig, name: str) -> MemoryPublisher:
    return MemoryPublisher(cfg, name)
