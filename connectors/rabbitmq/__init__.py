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
      properties carry the attributes, content-type the ``datacontenttype``;
      a ``time`` sent as an AMQP timestamp, an integer of milliseconds as the
      CloudEvents SDKs write it or a timestamp field, becomes RFC 3339 in UTC;
      ``ce-`` headers, as the SDK's RabbitMQ binding writes them, are read as
      they are, without percent-decoding).
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

Modules, each importing only those before it: ``config`` (the pydantic models),
``connection`` (TLS and the robust connection), ``binding`` (CloudEvents
attributes in AMQP headers), ``acks`` (``ChannelAcks``), ``delivery`` (the
mapping of a delivered message), ``consume`` (``RabbitMQSource``) and
``publish`` (``RabbitMQPublisher``). aio-pika is imported lazily, so the config
schema needs no AMQP client.
"""

from __future__ import annotations

from connectors.rabbitmq.config import (
    BindingSpec,
    ExchangeSpec,
    QueueDeclaration,
    RabbitMQConfig,
    RabbitMQConsumeConfig,
    TLSConfig,
)
from connectors.rabbitmq.consume import RabbitMQSource
from connectors.rabbitmq.publish import RabbitMQPublisher


def source(cfg: RabbitMQConfig, name: str) -> RabbitMQSource:
    """The ``ConnectorKind.source`` factory."""
    return RabbitMQSource(cfg, name)


def publisher(cfg: RabbitMQConfig, name: str) -> RabbitMQPublisher:
    """The ``ConnectorKind.publisher`` factory."""
    return RabbitMQPublisher(cfg, name)


__all__ = [
    "BindingSpec",
    "ExchangeSpec",
    "QueueDeclaration",
    "RabbitMQConfig",
    "RabbitMQConsumeConfig",
    "RabbitMQPublisher",
    "RabbitMQSource",
    "TLSConfig",
    "publisher",
    "source",
]
