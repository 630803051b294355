"""``type: rabbitmq``: consume a queue and publish to exchanges over AMQP 0-9-1 (aio-pika).

Consume:
    * One robust connection (``connect_robust``): after a dropped connection or a
      broker restart aio-pika reconnects, reopens the channel and restores its
      QoS and declarations; the source then subscribes again (``basic.consume``
      on aiormq's channel under a fresh consumer tag: no ``IncomingMessage``
      object and no second task per message). A watchdog checks every
      ``health_interval`` that the consumer really exists (client side, and the
      broker's consumer count) and subscribes again if it does not: a known
      aio-pika failure is a restored connection with zero consumers.
      ``status().connected`` is false from a connection loss until the restore.
    * Prefetch (``basic.qos``) is ``prefetch`` or else ``max_in_flight``, so the
      broker never hands over more than the bridge is willing to hold.
    * ``settle(ACK)`` acks, ``settle(RETRY_LATER)`` nacks with requeue, always
      on the channel the message came on (``ChannelAcks``: the settlements of one
      event-loop turn are written together, nacks first, then one
      ``basic.ack(multiple)`` for the settled prefix and single acks for the
      rest). When that channel is gone (the connection dropped) nothing is sent:
      a delivery tag belongs to its channel, and the broker has already requeued
      the message; it comes back and the ledger keeps branches that succeeded
      from running again. Messages buffered from a dead channel are dropped
      before they are handed out, for the same reason. ``stop`` writes pending
      settlements before it closes.
    * Message ids: ``meta["message_id"]`` is the AMQP ``message_id`` property,
      else the CloudEvents id header. AMQP 0-9-1 has nothing else that survives
      redelivery, so by default a message without either has no stable id:
      it gets a random event id and a redelivery runs every branch again (at
      least once, never lost). ``message_id_fallback: content_hash`` uses a
      SHA-256 of exchange, routing key, properties, headers and body instead;
      redeliveries are then recognized, but two distinct messages with identical
      content count as one for ever (the ledger keeps keys), so choose it only
      when identical messages are true duplicates. ``RabbitMQPublisher`` always
      sets ``message_id``.
    * Properties (message_id, correlation_id, type, timestamp, content_type ...)
      are in ``meta`` (event attributes ``amqp.*``); the headers table is in
      ``headers``, values as text, plus ``content-type`` from the property (the
      CloudEvents AMQP binding: ``cloudEvents:``/``cloudEvents_`` application
      properties carry the attributes, content-type the ``datacontenttype``).
      Unless ``event.correlation_id`` is configured, the correlation id is the
      ``correlation_id`` property, else the ``x-correlation-id`` header.
    * ``status().lag`` is the queue's depth (messages ready), for metrics.

Dead letters: the source acks a message once all its runs are final, some of
which may have succeeded, so it never rejects (``requeue=False``) a message to
route it to the queue's dead-letter exchange. A handler whose runs should land
in the DLX names it: ``dead_letter: {connector: <this connector>, destination:
"<dlx>/<routing key>"}``; the dispatcher publishes the dead letter (the event
as a structured CloudEvent, with ``bridge-dead-letter-id``, ``bridge-handler``,
``bridge-reason`` headers) through the confirming publisher, besides storing it.
The broker's own dead-lettering still covers what the bridge never settles: on
a quorum queue with ``x-delivery-limit``, a message requeued (RETRY_LATER,
crashes) too often goes to the DLX. Leave the limit headroom: the broker counts
every return, and a graceful stop returns what was prefetched but not started.

Modules: this one holds the config, the connection and the factories;
``rabbitmq_source`` the ``RabbitMQSource``; ``rabbitmq_delivery`` the mapping of
a delivered message and ``ChannelAcks``; ``rabbitmq_publish`` the publisher.

Publish: ``RabbitMQPublisher`` uses publisher confirms and ``mandatory``
(an unroutable message raises ``ConnectorError`` instead of vanishing), and
persistent delivery. A destination is ``exchange/routing.key``: split at the
first ``/``; an empty exchange (``/orders``) or no ``/`` at all (``orders``)
means the default exchange, where the routing key is a queue name; an empty
routing key (``events/``) takes the publish ``key``. Headers go into the
headers table; ``content-type`` becomes the property, the correlation id
(``x-correlation-id``) also the ``correlation_id`` property, the CloudEvents
id the ``message_id`` (a new id when there is none), the CloudEvents type the
``type``. ``ce_prefix`` is ``cloudEvents:`` (the AMQP binding).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.duration import Duration
from bridge.errors import ConnectorError
from bridge.transport import ConnectorConfig, ConsumeConfig

if TYPE_CHECKING:
    from aio_pika.abc import AbstractRobustConnection

    from connectors.rabbitmq_publish import RabbitMQPublisher
    from connectors.rabbitmq_source import RabbitMQSource

MAX_PREFETCH = 65_535  # basic.qos prefetch_count is a short
CE_PREFIXES = ("cloudevents:", "cloudevents_", "ce-", "ce_")


class TLSConfig(BaseModel):
    """TLS for ``amqps://`` URLs."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(
        None, description="PEM file of the CA(s) that sign the broker's certificate."
    )
    cert_file: str | None = Field(None, description="Client certificate (PEM), for mutual TLS.")
    key_file: str | None = Field(None, description="Private key of the client certificate (PEM).")
    key_password: str | None = Field(
        None, description="Password of the key file (use ${file:...} or ${ENV})."
    )
    verify: bool = Field(
        True, description="Verify the broker's certificate and host name (never off in production)."
    )


class ExchangeSpec(BaseModel):
    """An exchange to declare."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Exchange name.")
    type: str = Field("direct", description="direct | fanout | topic | headers | x-* plugin types.")
    durable: bool = Field(True, description="Survives a broker restart.")
    auto_delete: bool = Field(False, description="Deleted when its last binding goes.")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="Exchange arguments (e.g. `alternate-exchange`)."
    )


class BindingSpec(BaseModel):
    """A binding of the consumed queue to an exchange."""

    model_config = ConfigDict(extra="forbid")

    exchange: str = Field(description="Exchange to bind the queue to.")
    routing_key: str = Field("", description="Binding key (a pattern for topic exchanges).")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="Binding arguments (headers exchanges)."
    )


class QueueDeclaration(BaseModel):
    """Declare the queue (and exchanges, bindings) on connect and after every reconnect."""

    model_config = ConfigDict(extra="forbid")

    durable: bool = Field(True, description="Survives a broker restart.")
    exclusive: bool = Field(False, description="Used by this connection only.")
    auto_delete: bool = Field(False, description="Deleted when its last consumer goes.")
    arguments: dict[str, Any] = Field(
        default_factory=dict,
        description="Queue arguments: `x-queue-type: quorum`, `x-dead-letter-exchange`, "
        "`x-dead-letter-routing-key`, `x-delivery-limit`, `x-message-ttl` ...",
    )
    exchanges: list[ExchangeSpec] = Field(
        default_factory=list, description="Exchanges to declare first (the DLX too)."
    )
    bindings: list[BindingSpec] = Field(
        default_factory=list, description="Bindings of the queue to exchanges."
    )


class RabbitMQConsumeConfig(ConsumeConfig):
    """Consume one queue."""

    queue: str = Field(description="Queue to consume.")
    declare: QueueDeclaration | None = Field(
        None,
        description="Declare the queue, exchanges and bindings. Without it the queue must "
        "exist already (checked passively, never changed).",
    )
    prefetch: int | None = Field(
        None, ge=1, le=MAX_PREFETCH, description="basic.qos prefetch; default max_in_flight."
    )
    message_id_fallback: Literal["none", "content_hash"] = Field(
        "none",
        description="Id of a message without message_id property or CloudEvents id: none "
        "(random; redelivery re-runs every branch) or content_hash (identical messages "
        "count as one).",
    )
    health_interval: Duration = Field(
        5.0, gt=0, description="How often the consumer and the queue depth are checked."
    )

    @model_validator(mode="after")
    def _correlation_default(self) -> RabbitMQConsumeConfig:
        # The AMQP correlation_id property is the natural correlation id of a message.
        if "correlation_id" not in self.event.model_fields_set:
            self.event.correlation_id = ["meta:correlation_id", "header:x-correlation-id"]
        return self

    @property
    def prefetch_count(self) -> int:
        return self.prefetch or min(self.max_in_flight, MAX_PREFETCH)


class RabbitMQConfig(ConnectorConfig):
    """A RabbitMQ broker: consume a queue, publish to exchanges."""

    type: Literal["rabbitmq"] = "rabbitmq"
    url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/",
        description="amqp:// or amqps:// URL with credentials and vhost (use ${ENV} for secrets).",
    )
    tls: TLSConfig | None = Field(None, description="CA, client certificate and key for amqps://.")
    heartbeat: int = Field(30, ge=0, description="AMQP heartbeat in seconds (0: off).")
    connect_timeout: Duration = Field(10.0, gt=0, description="Timeout of one connection attempt.")
    reconnect_interval: Duration = Field(
        2.0, gt=0, description="Pause between reconnection attempts."
    )
    publish_timeout: Duration = Field(
        30.0, gt=0, description="How long a publish waits for the connection and the confirm."
    )
    consume: RabbitMQConsumeConfig | None = Field(
        None, description="Consume a queue; without it the connector is a publish target only."
    )


# --------------------------------------------------------------------------- connection


def ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """The client TLS context: the CA to trust, the client certificate, verification."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=tls.key_password)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def connect(cfg: RabbitMQConfig, name: str, role: str) -> AbstractRobustConnection:
    """A robust connection, connected once.

    Raises:
        ConnectorError: the first attempt failed (retriable unless credentials were refused).
    """
    import aio_pika
    from aio_pika.exceptions import ProbableAuthenticationError

    try:
        context = ssl_context(cfg.tls) if cfg.tls is not None else None
        return await aio_pika.connect_robust(
            cfg.url,
            timeout=cfg.connect_timeout,
            ssl_context=context,
            heartbeat=cfg.heartbeat,
            reconnect_interval=cfg.reconnect_interval,
            client_properties={"connection_name": f"bridge:{name}:{role}"},
        )
    except ProbableAuthenticationError as exc:
        raise ConnectorError(f"rabbitmq {name}: login refused: {exc}", retriable=False) from exc
    except (OSError, ssl.SSLError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise ConnectorError(f"rabbitmq {name}: TLS files: {exc}", retriable=False) from exc
        raise ConnectorError(f"rabbitmq {name}: cannot connect: {exc}") from exc
    except Exception as exc:  # aiormq raises a variety of AMQP and transport errors
        raise ConnectorError(f"rabbitmq {name}: cannot connect: {exc!r}") from exc


def ce_attribute(lowered: Mapping[str, str], name: str) -> str | None:
    """A CloudEvents attribute from headers with lowercased names, under any binding prefix."""
    for prefix in CE_PREFIXES:
        value = lowered.get(prefix + name)
        if value:
            return value
    return None


def source(cfg: RabbitMQConfig, name: str) -> RabbitMQSource:
    from connectors.rabbitmq_source import RabbitMQSource

    return RabbitMQSource(cfg, name)


def publisher(cfg: RabbitMQConfig, name: str) -> RabbitMQPublisher:
    from connectors.rabbitmq_publish import RabbitMQPublisher

    return RabbitMQPublisher(cfg, name)
