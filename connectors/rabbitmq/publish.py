"""The publishing half of ``type: rabbitmq``: ``RabbitMQPublisher`` (see ``connectors.rabbitmq``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge.errors import ConnectorError
from connectors.rabbitmq.binding import ce_attribute
from connectors.rabbitmq.config import RabbitMQConfig
from connectors.rabbitmq.connection import connect

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection


def parse_destination(destination: str, key: str | None) -> tuple[str, str]:
    """``exchange/routing.key`` -> (exchange, routing key), as ``connectors.rabbitmq`` describes."""
    exchange, sep, routing_key = destination.partition("/")
    if not sep:
        return "", destination
    if not routing_key and key:
        routing_key = key
    return exchange, routing_key


class RabbitMQPublisher:
    """Publishes with confirms, ``mandatory`` and persistent delivery.

    ``publish`` returns once the broker confirmed the message; it raises
    ``ConnectorError`` when the broker nacked it, could not route it, or did not
    confirm within ``publish_timeout`` (waiting for a reconnect included).
    Publishes that share a ``message_id`` (one event sent to two destinations)
    go one after the other: aiormq matches a returned (unroutable) message to
    its confirm by ``message_id``, so two in flight at once could swap outcomes.
    """

    ce_prefix = "cloudEvents:"

    def __init__(self, cfg: RabbitMQConfig, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._lock = asyncio.Lock()
        self._in_flight: dict[str, asyncio.Future[None]] = {}

    async def start(self) -> None:
        """Connect and open the confirming channel.

        Raises:
            ConnectorError: the broker cannot be reached.
        """
        async with self._lock:
            if self._channel is not None:
                return
            connection = await connect(self.cfg, self.name, "publish")
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            except Exception as exc:
                await connection.close()
                raise ConnectorError(f"rabbitmq {self.name}: cannot open a channel: {exc}") from exc
            self._connection, self._channel = connection, channel

    async def publish(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None
    ) -> None:
        """Publish to ``exchange/routing.key``; return once the broker confirmed it.

        Raises:
            ConnectorError: nacked, unroutable (not retriable), unconfirmed in time,
                or the connection failed.
        """
        from aio_pika.exceptions import AMQPError, DeliveryError, PublishError

        if self._channel is None:
            await self.start()
        channel = self._channel
        if channel is None:
            raise ConnectorError(f"rabbitmq {self.name}: publisher is closed")
        exchange, routing_key = parse_destination(destination, key)
        message = outgoing_message(body, headers)
        message_id: str = message.message_id
        earlier = self._in_flight.get(message_id)
        mine = self._in_flight[message_id] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.cfg.publish_timeout):
                if earlier is not None:
                    await asyncio.wait((earlier,))
                # Waits while the robust connection and the channel are being restored.
                await channel.ready()
                underlay = await channel.get_underlay_channel()
                await underlay.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=message.properties,
                    mandatory=True,
                )
        except PublishError as exc:
            raise ConnectorError(
                f"rabbitmq {self.name}: unroutable: no queue is bound to {destination!r}",
                retriable=False,
            ) from exc
        except DeliveryError as exc:
            raise ConnectorError(f"rabbitmq {self.name}: broker nacked the message") from exc
        except TimeoutError as exc:
            raise ConnectorError(
                f"rabbitmq {self.name}: no confirm within {self.cfg.publish_timeout:g}s"
            ) from exc
        except (AMQPError, ConnectionError, RuntimeError) as exc:
            raise ConnectorError(f"rabbitmq {self.name}: publish failed: {exc!r}") from exc
        finally:
            mine.set_result(None)
            if self._in_flight.get(message_id) is mine:
                del self._in_flight[message_id]

    async def close(self) -> None:
        """Close the connection (publishing afterwards connects again)."""
        async with self._lock:
            connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await connection.close()


def outgoing_message(body: bytes, headers: Mapping[str, str]) -> Any:
    """An ``aio_pika.Message``: persistent, with properties taken from the headers."""
    import aio_pika

    table = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = ce_attribute(lowered, "id") or lowered.get("bridge-dead-letter-id")
    return aio_pika.Message(
        body,
        headers=table,  # type: ignore[arg-type]
        content_type=lowered.get("content-type") or "application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id or uuid.uuid4().hex,
        correlation_id=lowered.get("x-correlation-id") or ce_attribute(lowered, "correlationid"),
        type=ce_attribute(lowered, "type"),
        timestamp=datetime.now(UTC),
    )
