"""``type: kafka``: consume topics in a consumer group and publish with ``acks=all`` (aiokafka).

Delivery semantics (DESIGN §6), consuming:

* At least once. Offsets are committed by the bridge, never automatically. Per
  partition only the contiguous prefix of finished offsets is committed: offset
  ``N + 1`` is committed once every message fetched at or below ``N`` was settled
  ``ACK``. Commits run every ``commit_interval``, when partitions are revoked and on
  shutdown. A crash repeats at most the uncommitted window; the ledger keeps a
  repeated message from re-running the handlers that had succeeded, so repeated
  handler runs are bounded by the runs in flight at the crash.
* Ordering (``consume.ordering``): ``key`` (default) withholds the next message of
  a key until the previous one of that key (in its partition) is settled, while
  other keys run concurrently; messages without a key are not ordered.
  ``partition`` runs one message per partition at a time; ``none`` runs all at once.
* Backpressure: once ``max_in_flight`` messages are fetched but not settled, every
  partition is paused; they resume when half of that has settled. A partition whose
  uncommitted window (offsets held behind its oldest unfinished message) reaches
  ``max_uncommitted`` is paused on its own. The consumer is polled at least every
  half ``max_poll_interval`` while paused and heartbeats run in the background, so a
  handler slower than the session timeout or the poll interval causes no rebalance.
* Rebalances: on revoke, the revoked partitions yield nothing more, their in-flight
  runs get ``revoke_timeout`` to finish, the finished prefix is committed and the
  partitions are released. A delivery settled after the release is ignored (never
  committed): the next owner gets it again from the committed offset. On assign,
  consumption resumes from the committed offset, or ``start_from`` for a new group.
* ``settle(RETRY_LATER)`` outside shutdown (e.g. the store failed) hands the message
  out again after a short backoff, in its place: its key or partition stays blocked
  and the commit never passes it. During shutdown it is left for redelivery.
* Event ids: a CloudEvent (Kafka binding: ``ce_*`` headers, or structured mode) keeps
  its id; any other message gets ``<topic>-<partition>-<offset>``, stable across
  redelivery. Headers become ``Delivery.headers``; ``topic``, ``partition``,
  ``offset``, ``key`` and ``timestamp`` (ms since the epoch) become metadata
  (``kafka.partition`` ... on the event). A tombstone (null value) has an empty body.
* Lag per partition (end offset minus committed) is in ``status()``, hence in the
  ``bridge_source_lag`` metric.

Publishing: ``acks=all``, no idempotent producer (so it works with brokers that lack
it), optional compression and linger. ``publish()`` returns once the broker has the
message. The ``publish`` handler sends CloudEvents in binary mode with ``ce_`` headers
(UTF-8 text, no percent-encoding: the Kafka binding), the data as the value (JSON,
text as UTF-8, bytes as they are), or in structured mode.

Security: TLS (CA, client certificate and key) and SASL (PLAIN, SCRAM-SHA-256/512,
OAUTHBEARER through a token provider). Secrets come from ``${VAR}`` or ``${file:PATH}``.

Modules, each importing only those before it: ``config`` (the pydantic models),
``client`` (connection options shared by consumer, producer and admin client, and
which errors are retriable), ``intake`` (the source's bookkeeping, without I/O),
``commit`` (the source's offset commits), ``fetch`` (its fetch rounds, which block a
partition whose batch cannot be decoded), ``consume`` (``KafkaSource``),
``publish`` (``KafkaPublisher``) and ``embedded`` (the broker ``bridge dev``
starts). aiokafka is imported lazily, so the config schema needs no Kafka client.
"""

from __future__ import annotations

from connectors.kafka.client import client_options, connection_options, retriable
from connectors.kafka.config import (
    KafkaConfig,
    KafkaConsumeConfig,
    KafkaPublishConfig,
    KafkaSASL,
    KafkaTLS,
)
from connectors.kafka.consume import KafkaSource
from connectors.kafka.embedded import embedded_broker
from connectors.kafka.publish import KafkaPublisher


def source(cfg: KafkaConfig, name: str) -> KafkaSource:
    """The ``ConnectorKind.source`` factory."""
    return KafkaSource(cfg, name)


def publisher(cfg: KafkaConfig, name: str) -> KafkaPublisher:
    """The ``ConnectorKind.publisher`` factory."""
    return KafkaPublisher(cfg, name)


__all__ = [
    "KafkaConfig",
    "KafkaConsumeConfig",
    "KafkaPublishConfig",
    "KafkaPublisher",
    "KafkaSASL",
    "KafkaSource",
    "KafkaTLS",
    "client_options",
    "connection_options",
    "embedded_broker",
    "publisher",
    "retriable",
    "source",
]
