"""``type: nats``: consume a NATS JetStream stream and publish to subjects (nats-py).

Consume:
    * A durable pull consumer (``consume.durable``) on ``consume.stream`` with filter
      ``subjects``. With ``declare`` the stream is created when missing (never
      changed when it exists) and the consumer created or updated (explicit acks,
      ``ack_wait``, ``max_deliver``, ``max_ack_pending`` = ``max_in_flight``);
      without it the consumer must exist and is only bound. Replicas share the
      durable consumer, so JetStream spreads messages over them.
    * ``settle(ACK)`` acks, after every branch is final (or dead-lettered: the
      dispatcher settles a dead-lettered message with ACK, and the contract does not
      tell the two apart, so it is acked, not ``term``-ed: the bridge's dead-letter
      store is the record of it and the message is never redelivered either way).
      ``settle(RETRY_LATER)`` naks with ``retry_delay`` (the messages held behind it
      in its key lane are nak'd too). While a message is held (running, or waiting
      in its lane) an in-progress ack (``+WPI``) is sent before half of ``ack_wait``
      is left, so long runs are not redelivered; after a crash JetStream redelivers
      what was not acked once ``ack_wait`` runs out.
    * A finite ``max_deliver`` makes JetStream stop delivering a message after that
      many deliveries (crash redeliveries included) — it is then neither processed
      nor dead-lettered by the bridge; keep the default -1 unless that is wanted.
    * Ordering: ``key`` hands out one message per key at a time, in stream order;
      the key is the subject or ``header:NAME``. ``none`` (the default, since one
      subject often carries every message): no ordering. After a crash the messages
      the dead consumer held come back only when their ``ack_wait`` runs out, so under
      ``key`` a source that finds unacked messages on the consumer at start waits
      about ``ack_wait`` before its first pull: JetStream then hands the redeliveries
      out before newer messages, and each key's order holds across the crash (one
      replica; across replicas a key can run on two at once).
    * Ids: ``meta["message_id"]`` is the ``Nats-Msg-Id`` header, else
      ``<stream>-<sequence>``; normalization makes it the event id of a message that
      is not a CloudEvent, so a redelivery is recognized by the ledger.
    * CloudEvents NATS binding: ``ce-`` headers (binary) or a structured
      ``application/cloudevents+json`` body; read by the engine's normalization.
    * ``status().lag`` is the consumer's ``num_pending`` (what the KEDA NATS
      JetStream scaler reads), refreshed every ``health_interval``.

Publish: ``NatsPublisher`` publishes through JetStream and waits for the publish
ack; ``Nats-Msg-Id`` is the event id (``ce-id``), so the stream's duplicate window
drops a republished event. The ``publish`` handler writes ``ce-`` headers.

Connection: ``servers`` (``nats://``/``tls://``), TLS (CA, client certificate),
a ``.creds`` file, an NKey seed file, user/password or a token; reconnects for ever
(pull requests and acks resume on the new connection: acks are bound to the
consumer, not the connection). ``bridge dev`` starts no NATS server; it says so when
none answers. nats-py is imported lazily, so the config schema needs no NATS client.
"""

from __future__ import annotations

from connectors.nats.config import NatsConfig, NatsConsumeConfig, NatsTLS, StreamDeclaration
from connectors.nats.connection import check_reachable
from connectors.nats.consume import NatsSource
from connectors.nats.publish import NatsPublisher


def source(cfg: NatsConfig, name: str) -> NatsSource:
    """The ``ConnectorKind.source`` factory."""
    return NatsSource(cfg, name)


def publisher(cfg: NatsConfig, name: str) -> NatsPublisher:
    """The ``ConnectorKind.publisher`` factory."""
    return NatsPublisher(cfg, name)


__all__ = [
    "NatsConfig",
    "NatsConsumeConfig",
    "NatsPublisher",
    "NatsSource",
    "NatsTLS",
    "StreamDeclaration",
    "check_reachable",
    "publisher",
    "source",
]
