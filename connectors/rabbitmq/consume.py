"""The consuming half of ``type: rabbitmq``: ``RabbitMQSource`` (see ``connectors.rabbitmq``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from bridge.errors import ConnectorError
from bridge.transport import ConnectorStatus, Delivery, Settlement
from connectors.rabbitmq.acks import ChannelAcks
from connectors.rabbitmq.config import RabbitMQConfig
from connectors.rabbitmq.connection import connect
from connectors.rabbitmq.delivery import amqp_headers, amqp_meta, content_hash, delivery_tag

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection, AbstractRobustQueue
    from aiormq.abc import DeliveredMessage

log = logging.getLogger("connectors.rabbitmq")


class RabbitMQSource:
    """Consumes one queue; the delivery semantics are in ``connectors.rabbitmq``'s docstring."""

    def __init__(self, cfg: RabbitMQConfig, name: str) -> None:
        if cfg.consume is None:
            raise ValueError(f"connector {name!r} has no consume section")
        self.cfg = cfg
        self.consume = cfg.consume
        self.name = name
        self.queue_name = cfg.consume.queue
        self._stopped = asyncio.Event()
        self._intake_stopped = False  # the drain began: no consumer, no re-subscribe
        # Each message travels with the acks of the channel it came on.
        self._buffer: asyncio.Queue[tuple[DeliveredMessage, ChannelAcks]] = asyncio.Queue()
        self._acks: ChannelAcks | None = None
        self._retired: list[ChannelAcks] = []  # of closed channels, until their writes end
        self.stale_settles = 0  # settlements not written: their channel was gone
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._tag: str | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._watch_stop = asyncio.Event()
        self._probe: AbstractRobustChannel | None = None  # passive declares: depth, consumers
        self._link_up = False
        self._consumer_ok = False
        self._depth: float | None = None
        self.stale_dropped = 0  # buffered messages of a dead channel, never handed out
        self.resubscribes = 0  # consumers the watchdog had to restore
        self.reconnects = 0  # connections aio-pika restored

    async def start(self) -> None:
        """Connect, declare (or check) the queue, set the prefetch and subscribe.

        Raises:
            ConnectorError: cannot connect, or the queue is missing / declared differently.
        """
        from aio_pika.exceptions import AMQPError

        await self._close(asyncio.get_running_loop().time() + 5.0)
        self._stopped.clear()
        self._intake_stopped = False
        connection = await connect(self.cfg, self.name, "consume")
        self._connection = connection
        try:
            channel = await connection.channel(publisher_confirms=False)
            self._channel = channel
            await channel.set_qos(prefetch_count=self.consume.prefetch_count)
            await self._declare(channel)
            self._probe = await connection.channel(publisher_confirms=False)
            await self._subscribe(channel)
        except AMQPError as exc:
            await self._close(asyncio.get_running_loop().time() + 5.0)
            raise _declare_error(self.name, self.queue_name, exc) from exc
        except BaseException:
            await self._close(asyncio.get_running_loop().time() + 5.0)
            raise
        self._link_up = self._consumer_ok = True
        connection.close_callbacks.add(self._on_connection_lost)
        connection.reconnect_callbacks.add(self._on_reconnected)
        # aio-pika restores the channel, its QoS and declarations; the consumer is ours.
        channel.reopen_callbacks.add(self._on_reopen)
        self._watch_stop = asyncio.Event()
        self._watchdog = asyncio.create_task(self._watch(), name=f"rabbitmq-watch:{self.name}")

    async def _subscribe(self, channel: AbstractRobustChannel) -> None:
        """basic.consume on the channel's current AMQP channel, under a fresh consumer tag.

        The consumer lives on aiormq's channel rather than a ``RobustQueue``: the
        callback then gets the raw delivery (no ``IncomingMessage`` and no second
        task per message), and re-subscribing after a restore is explicit here.
        """
        underlay = await channel.get_underlay_channel()
        tag = f"bridge.{self.name}.{uuid.uuid4().hex[:12]}"
        await underlay.basic_consume(
            self.queue_name, self._on_message, no_ack=False, consumer_tag=tag
        )
        self._tag = tag

    async def _on_reopen(self, channel: AbstractRobustChannel | None, /) -> None:
        if channel is None or channel is not self._channel or self._intake_stopped:
            return  # closed by us meanwhile, or draining
        try:
            await self._subscribe(channel)
        except Exception as exc:  # the watchdog tries again
            log.warning(
                "rabbitmq re-subscribe after reopen failed",
                extra={"connector": self.name, "error": repr(exc)},
            )

    async def _declare(self, channel: AbstractRobustChannel) -> AbstractRobustQueue:
        spec = self.consume.declare
        if spec is None:
            return await channel.declare_queue(self.queue_name, passive=True)
        for exchange in spec.exchanges:
            await channel.declare_exchange(
                exchange.name,
                exchange.type,
                durable=exchange.durable,
                auto_delete=exchange.auto_delete,
                arguments=exchange.arguments or None,
            )
        queue = await channel.declare_queue(
            self.queue_name,
            durable=spec.durable,
            exclusive=spec.exclusive,
            auto_delete=spec.auto_delete,
            arguments=spec.arguments or None,
        )
        for binding in spec.bindings:
            await queue.bind(
                binding.exchange, binding.routing_key, arguments=binding.arguments or None
            )
        return queue

    async def _on_message(self, message: DeliveredMessage) -> None:
        acks = self._acks
        if acks is None or acks.channel is not message.channel:
            self._retired = [old for old in self._retired if old.task is not None]
            if acks is not None:
                self._retired.append(acks)
            acks = self._acks = ChannelAcks(message.channel, self._count_stale)
        acks.delivered.append(delivery_tag(message))
        self._buffer.put_nowait((message, acks))

    def _count_stale(self, count: int) -> None:
        self.stale_settles += count

    def _on_connection_lost(self, *_: Any) -> None:
        self._link_up = False

    def _on_reconnected(self, *_: Any) -> None:
        # Channels, declarations and consumers are restored before this runs.
        self._link_up = True
        self.reconnects += 1

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Delivered messages, in order, until ``stop()`` (those of a dead channel skipped)."""
        stop = asyncio.ensure_future(self._stopped.wait())
        try:
            while not self._stopped.is_set():
                item = await self._next(stop)
                if item is None:
                    return
                message, acks = item
                if message.channel.is_closed:
                    self.stale_dropped += 1  # the broker has requeued it already
                    continue
                yield self._delivery(message, acks)
        finally:
            stop.cancel()

    async def _next(self, stop: asyncio.Future[Any]) -> tuple[DeliveredMessage, ChannelAcks] | None:
        buffer = self._buffer
        if not buffer.empty():
            return buffer.get_nowait()
        getter = asyncio.ensure_future(buffer.get())
        try:
            await asyncio.wait((getter, stop), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if getter.done() and not getter.cancelled():
                buffer.put_nowait(getter.result())  # not handed out: keep it for the next reader
            getter.cancel()
            raise
        if getter.done():
            return getter.result()
        getter.cancel()
        return None

    def _delivery(self, message: DeliveredMessage, acks: ChannelAcks) -> Delivery:
        tag = delivery_tag(message)  # settled through its own channel's acks, never another's

        async def settle(outcome: Settlement) -> None:
            acks.settle(tag, outcome is Settlement.ACK)

        headers = amqp_headers(message)
        meta = amqp_meta(message, self.queue_name, headers)
        if "message_id" not in meta and self.consume.message_id_fallback == "content_hash":
            meta["message_id"] = content_hash(message)
        return Delivery(message.body, headers, meta, settle, self.name)

    # ------------------------------------------------------------------ health

    async def _watch(self) -> None:
        misses = 0
        interval = self.consume.health_interval
        stop = self._watch_stop
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
                return
            healthy = await self._check()
            misses = 0 if healthy else misses + 1
            self._consumer_ok = healthy or misses < 2
            if misses >= 2:  # twice in a row: not a restore in progress, a lost consumer
                await self._resubscribe()
                misses = 0

    async def _check(self) -> bool:
        """Refresh the depth; False when connected but without a live consumer."""
        from aio_pika.exceptions import ChannelNotFoundEntity

        channel, probe, tag = self._channel, self._probe, self._tag
        if channel is None or probe is None or tag is None:
            return True
        if not self._link_up or channel.is_closed or probe.is_closed:
            return True  # being restored: the reopen callback subscribes again
        try:
            # No cancellation from outside: aiormq closes a channel whose RPC was
            # cancelled; its own timeout closes the probe channel, which aio-pika reopens.
            underlay = await channel.get_underlay_channel()
            probing = await probe.get_underlay_channel()
            declared = await probing.queue_declare(
                self.queue_name, passive=True, timeout=self.consume.health_interval
            )
        except ChannelNotFoundEntity:
            self._depth = None
            return False  # the queue is gone: there is no consumer either
        except Exception as exc:  # the probe is advisory; the link state says the rest
            log.debug("queue probe failed", extra={"connector": self.name, "error": repr(exc)})
            return True
        self._depth = float(declared.message_count or 0)
        consumers = getattr(underlay, "consumers", {})
        return tag in consumers and bool(declared.consumer_count)

    async def _resubscribe(self) -> None:
        channel, tag = self._channel, self._tag
        if channel is None:
            return
        log.warning(
            "rabbitmq consumer lost; subscribing again",
            extra={"connector": self.name, "queue": self.queue_name},
        )
        try:
            async with asyncio.timeout(self.consume.health_interval):
                underlay = await channel.get_underlay_channel()
                if tag is not None:
                    with contextlib.suppress(Exception):
                        await underlay.basic_cancel(tag)
                await self._subscribe(channel)  # a new tag: the broker may still hold the old
            self.resubscribes += 1
            self._consumer_ok = True
        except Exception as exc:  # try again at the next check
            log.error("resubscribe failed", extra={"connector": self.name, "error": repr(exc)})

    def status(self) -> ConnectorStatus:
        """Connected while the link and the consumer are up; lag is the queue depth."""
        channel = self._channel
        connected = (
            self._link_up
            and self._consumer_ok
            and channel is not None
            and not channel.is_closed
            and not self._stopped.is_set()
        )
        detail = "" if connected else "disconnected or consumer missing"
        lag = {self.queue_name: self._depth} if self._depth is not None else {}
        return ConnectorStatus(connected, detail, lag)

    # ------------------------------------------------------------------ stop

    async def stop_intake(self) -> None:
        """Cancel the consumer and requeue what was buffered; deliveries handed out can
        still be settled on their channel until ``stop()``. Idempotent."""
        self._intake_stopped = True
        channel, tag = self._channel, self._tag
        self._tag = None
        await self._stop_watchdog(5.0)  # it would subscribe again
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                if channel is not None and tag is not None and not channel.is_closed:
                    await (await channel.get_underlay_channel()).basic_cancel(tag)
                while not self._buffer.empty():
                    message, _ = self._buffer.get_nowait()
                    if not message.channel.is_closed:
                        await message.channel.basic_nack(delivery_tag(message), requeue=True)

    async def stop(self, deadline: float) -> None:
        """Cancel the consumer, requeue what was buffered, close. Idempotent."""
        self._stopped.set()
        await self._close(deadline)

    async def _close(self, deadline: float) -> None:
        connection, channel, tag = self._connection, self._channel, self._tag
        self._connection = self._channel = self._probe = None
        self._tag = None
        self._link_up = self._consumer_ok = False
        acks, self._acks = self._acks, None
        retired, self._retired = self._retired, []
        remaining = max(deadline - asyncio.get_running_loop().time(), 1.0)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(remaining):
                for owner in (*retired, acks):
                    if owner is not None:  # settled before stop: written before anything else
                        await owner.flushed()
        await self._stop_watchdog(remaining)
        if connection is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(remaining):
                if channel is not None and tag is not None and not channel.is_closed:
                    await (await channel.get_underlay_channel()).basic_cancel(tag)
                while not self._buffer.empty():
                    message, _ = self._buffer.get_nowait()
                    if not message.channel.is_closed:
                        await message.channel.basic_nack(delivery_tag(message), requeue=True)
        while not self._buffer.empty():  # closing the channel requeues them anyway
            self._buffer.get_nowait()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(remaining):
                await connection.close()

    async def _stop_watchdog(self, within: float) -> None:
        """Let the watchdog finish its check (cancelling an RPC would close its channel)."""
        watchdog, self._watchdog = self._watchdog, None
        self._watch_stop.set()
        if watchdog is None:
            return
        await asyncio.wait((watchdog,), timeout=within)
        if not watchdog.done():  # a broker that does not answer: the connection closes next
            watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)


def _declare_error(name: str, queue: str, exc: Exception) -> ConnectorError:
    from aio_pika.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed

    if isinstance(exc, ChannelNotFoundEntity):
        return ConnectorError(
            f"rabbitmq {name}: queue or exchange not found ({exc}); declare it or add "
            f"`consume.declare`",
            retriable=False,
        )
    if isinstance(exc, ChannelPreconditionFailed):
        return ConnectorError(
            f"rabbitmq {name}: queue {queue!r} exists with other settings: {exc}",
            retriable=False,
        )
    return ConnectorError(f"rabbitmq {name}: cannot subscribe to {queue!r}: {exc}")
