"""An AMQP delivery for the bridge: its ``Delivery`` fields, and how its tag is settled.

``ChannelAcks`` writes the settlements of one channel together; ``amqp_headers``,
``amqp_meta`` and ``content_hash`` map a delivered message (aiormq's
``DeliveredMessage``) to the headers, metadata and stable id of a ``Delivery``.
See ``connectors.rabbitmq`` for the semantics.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import orjson

from connectors.rabbitmq import ce_attribute

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage
    from pamqp.commands import Basic

log = logging.getLogger("connectors.rabbitmq")
# Headers the broker changes on redelivery or dead-lettering: not part of a message's identity.
_VOLATILE_HEADERS = ("x-delivery-count", "x-death", "x-first-death", "x-last-death")


class ChannelAcks:
    """The settlements of one AMQP channel, written together once per event-loop turn.

    Delivery tags belong to their channel and rise in delivery order. Settlements
    gathered in one turn go out as: the nacks (requeue) first, then one
    ``basic.ack(multiple)`` for the settled prefix of the delivered tags, then
    single acks for the rest. A multiple ack names a tag still unacked on the
    broker (another would be an "unknown delivery tag" channel error) and covers
    only tags that are all settled. Nothing is written once the channel is closed:
    the broker has requeued those messages already.
    """

    def __init__(self, channel: AbstractChannel, on_stale: Callable[[int], None]) -> None:
        self.channel = channel
        self.delivered: deque[int] = deque()  # tags not yet part of a settled prefix
        self.finished: set[int] = set()  # settled tags still behind an unsettled one
        self.acks: list[int] = []
        self.nacks: list[int] = []
        self.on_stale = on_stale  # told how many settlements were dropped: channel gone
        self.task: asyncio.Task[None] | None = None

    def settle(self, tag: int, ack: bool) -> None:
        """Queue a settlement; it is written on the next turn of the event loop."""
        if self.channel.is_closed:
            self.on_stale(1)
            return
        (self.acks if ack else self.nacks).append(tag)
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._flush())

    async def flushed(self) -> None:
        """Wait until every queued settlement has been written (or dropped)."""
        while self.task is not None:
            await asyncio.wait((self.task,))

    async def _flush(self) -> None:
        from aio_pika.exceptions import AMQPError

        try:
            while self.acks or self.nacks:
                acks, nacks = self.acks, self.nacks
                self.acks, self.nacks = [], []
                if self.channel.is_closed:
                    self.on_stale(len(acks) + len(nacks))
                    continue
                try:
                    await self._write(acks, nacks)
                except (AMQPError, ConnectionError, RuntimeError) as exc:
                    if not self.channel.is_closed:
                        log.error("rabbitmq ack failed", extra={"error": repr(exc)})
                    self.on_stale(len(acks) + len(nacks))
        finally:
            self.task = None

    async def _write(self, acks: list[int], nacks: list[int]) -> None:
        channel = self.channel
        for tag in nacks:
            await channel.basic_nack(tag, requeue=True)
        finished, delivered = self.finished, self.delivered
        finished.update(nacks)
        finished.update(acks)
        prefix_end = 0
        while delivered and delivered[0] in finished:
            prefix_end = delivered.popleft()
            finished.discard(prefix_end)
        in_prefix = [tag for tag in acks if tag <= prefix_end]
        if len(in_prefix) == 1:
            await channel.basic_ack(in_prefix[0])
        elif in_prefix:
            await channel.basic_ack(max(in_prefix), multiple=True)
        for tag in acks:
            if tag > prefix_end:
                await channel.basic_ack(tag)


def header_text(value: Any) -> str:
    """An AMQP field value as text (tables and arrays as JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float | Decimal):
        return str(value)
    return orjson.dumps(value, default=str).decode()


def amqp_headers(message: DeliveredMessage) -> dict[str, str]:
    """The headers table as text, plus ``content-type`` from the property."""
    props = message.header.properties
    headers = {key: header_text(value) for key, value in (props.headers or {}).items()}
    if props.content_type and "content-type" not in headers:
        headers["content-type"] = props.content_type
    return headers


_PROPERTIES = (  # meta name, pamqp property name
    ("correlation_id", "correlation_id"),
    ("type", "message_type"),
    ("content_type", "content_type"),
    ("content_encoding", "content_encoding"),
    ("app_id", "app_id"),
    ("user_id", "user_id"),
    ("reply_to", "reply_to"),
    ("priority", "priority"),
)


def amqp_meta(message: DeliveredMessage, queue: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """Transport metadata: delivery info and the AMQP properties that are set."""
    delivery, props = deliver_frame(message), message.header.properties
    meta: dict[str, Any] = {
        "queue": queue,
        "exchange": delivery.exchange or "",
        "routing_key": delivery.routing_key or "",
        "delivery_tag": delivery.delivery_tag,
        "redelivered": bool(delivery.redelivered),
    }
    for name, prop in _PROPERTIES:
        value = getattr(props, prop)
        if value is not None:
            meta[name] = value
    if props.timestamp is not None:
        stamp = props.timestamp
        meta["timestamp"] = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).isoformat()
    count = headers.get("x-delivery-count")
    if count is not None:
        meta["delivery_count"] = int(count) if count.isdigit() else count
    message_id = props.message_id or ce_attribute({k.lower(): v for k, v in headers.items()}, "id")
    if message_id:
        meta["message_id"] = message_id
    return meta


def deliver_frame(message: DeliveredMessage) -> Basic.Deliver:
    return cast("Basic.Deliver", message.delivery)  # consumers only receive Basic.Deliver


def delivery_tag(message: DeliveredMessage) -> int:
    return cast(int, deliver_frame(message).delivery_tag)


def content_hash(message: DeliveredMessage) -> str:
    """A stable id from what a redelivery does not change."""
    props = message.header.properties
    headers = {
        k: header_text(v)
        for k, v in (props.headers or {}).items()
        if not k.lower().startswith(_VOLATILE_HEADERS)
    }
    stamp = props.timestamp.isoformat() if props.timestamp else None
    identity = orjson.dumps(
        [
            message.exchange,
            message.routing_key,
            props.correlation_id,
            props.message_type,
            props.app_id,
            stamp,
            headers,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    digest = hashlib.sha256(identity)
    digest.update(b"\0")
    digest.update(message.body)
    return "sha256:" + digest.hexdigest()
