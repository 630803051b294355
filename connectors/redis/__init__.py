"""``type: redis``: consume a Redis stream through a consumer group, publish with XADD.

Consume (redis-py's asyncio client; it reconnects by itself on the next command):
    * ``XREADGROUP`` on ``consume.stream`` in ``consume.group`` as ``consume.consumer``
      (default ``<hostname>-<pid>``, one per process). ``declare: true`` creates the
      group, and the stream, with ``XGROUP CREATE ... MKSTREAM`` (from ``start_id``);
      otherwise the group must exist. On start the consumer first reads its own
      pending entries (``XREADGROUP ... 0``: left by an earlier run with the same name).
    * At most ``max_in_flight`` entries are read and not yet settled.
    * ``settle(ACK)`` → ``XACK`` (settlements are batched: one XACK per event-loop
      wake-up). ``settle(RETRY_LATER)`` leaves the entry pending and makes it
      claimable at once (``XCLAIM ... IDLE <claim_idle> JUSTID``: Redis has no nack),
      so it is delivered again by the next ``XAUTOCLAIM``, here or in another replica.
    * Every ``claim_interval`` the source runs ``XAUTOCLAIM`` for entries pending
      longer than ``claim_idle``: those of a consumer that died (SIGKILL, lost node)
      and those given back. Entries in flight here are kept fresh (``XCLAIM ...
      JUSTID`` to ourselves every ``min(claim_interval, claim_idle/3)``), so a slow run
      is never claimed by another replica while this one lives.
    * The delivery count is Redis's own (``XPENDING`` ``times_delivered``; 1 for a
      new entry), in ``meta["receive_count"]``. An entry delivered more than
      ``max_deliveries`` times is handed over with ``meta["reject_reason"] =
      "delivery_limit"``: the bridge dead-letters it with that reason (no handler
      runs) and acks it, so it is never pending for ever.
    * A deleted entry still pending (``XDEL``, trimming) is acked and skipped.
    * Identity: ``meta["message_id"]`` is ``<stream>-<entry id>``, stable across
      redeliveries and claims, so the ledger recognizes a redelivered entry.
    * ``status().lag`` is the group's ``lag`` (entries not yet delivered to the
      group, ``XINFO GROUPS``, Redis 7+) plus its pending entries; the KEDA Redis
      Streams scaler reads the same numbers.
    * Ordering: ``none`` (default): entries run concurrently up to ``max_in_flight``.
      ``key`` (``key: field:NAME``): one entry per key at a time, in stream order, keys
      in parallel (the key lanes of the shared ``InFlight`` book, as on NATS and SQS
      FIFO). A RETRY_LATER gives back the entry and those held behind it; entries of
      that key read meanwhile go back too, so the next claim pass (stream order)
      brings them again in order. A source that starts first claims what other
      consumers left pending (waiting at most ``claim_idle`` for it to become
      claimable), then reads new entries: a key keeps its order across a crash.
      Redis hands entries to the consumers of a group without regard to keys, so
      across replicas two entries of a key can run at once.

Entries (``connectors.redis.entry``): the ``data`` field (``consume.body_field``)
is the body, the other fields are headers: CloudEvents binary mode as ``ce-*``
fields (as in the Kafka binding), ``content-type``, ``traceparent``. A JSON body
with ``specversion`` is a structured CloudEvent. An entry without a ``data`` field
has its fields, as a JSON object, for body. The publisher writes the same shape.

Publish: ``RedisPublisher`` XADDs to the stream named by the destination, trimming
with ``MAXLEN ~ publish.maxlen`` when set.

Connection: ``redis://`` or ``rediss://`` (TLS: ``tls`` CA, client certificate,
verification), ACL ``username``/``password``, ``sentinel`` (hosts and service) or
``cluster: true``. Only a single node is tested here; Sentinel and Cluster go
through redis-py's own ``Sentinel.master_for`` and ``RedisCluster``.

Modules: ``config``, ``connection``, ``entry``, ``consume`` (reading), ``pending``
(settling, giving back, upkeep), ``publish``,
``embedded`` (``bridge dev`` checks the server is reachable; it starts none).
redis-py is imported lazily, so the config schema needs no Redis client.
"""

from __future__ import annotations

from connectors.redis.config import (
    RedisConfig,
    RedisConsumeConfig,
    RedisPublishConfig,
    RedisTLSConfig,
    SentinelConfig,
)
from connectors.redis.consume import RedisSource
from connectors.redis.embedded import check_reachable
from connectors.redis.publish import RedisPublisher


def source(cfg: RedisConfig, name: str) -> RedisSource:
    """The ``ConnectorKind.source`` factory."""
    return RedisSource(cfg, name)


def publisher(cfg: RedisConfig, name: str) -> RedisPublisher:
    """The ``ConnectorKind.publisher`` factory."""
    return RedisPublisher(cfg, name)


__all__ = [
    "RedisConfig",
    "RedisConsumeConfig",
    "RedisPublishConfig",
    "RedisPublisher",
    "RedisSource",
    "RedisTLSConfig",
    "SentinelConfig",
    "check_reachable",
    "publisher",
    "source",
]
