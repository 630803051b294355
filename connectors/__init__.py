"""Connector kinds. ``KINDS`` is the explicit registry; plugins add kinds through the
``bridge.connectors`` entry-point group (each entry point names a ``ConnectorKind``).

A connector is a subpackage (``kafka``, ``rabbitmq``, ``redis``, ``sqs``, ``webhook``) or, when
small, one module (``cron``, ``memory``). It must import its broker SDK lazily
(inside the Source, the Publisher or the dev-mode ``embedded`` hook), so the config
schema knows every kind even without its extra installed.
"""

from __future__ import annotations

from bridge.transport import (
    ConnectorConfig,
    ConnectorKind,
    Delivery,
    Publisher,
    Settlement,
    Source,
)
from connectors import cron, kafka, memory, nats, rabbitmq, redis, sqs, webhook

KINDS: dict[str, ConnectorKind] = {
    "memory": ConnectorKind(memory.MemoryConfig, "memory", memory.source, memory.publisher),
    "kafka": ConnectorKind(
        kafka.KafkaConfig,
        "kafka",
        kafka.source,
        kafka.publisher,
        embedded=kafka.embedded_broker,
        sdk=("aiokafka", "kafka"),
    ),
    "rabbitmq": ConnectorKind(
        rabbitmq.RabbitMQConfig,
        "amqp",
        rabbitmq.source,
        rabbitmq.publisher,
        sdk=("aio_pika", "rabbitmq"),
    ),
    "sqs": ConnectorKind(
        sqs.SqsConfig,
        "sqs",
        sqs.source,
        sqs.publisher,
        embedded=sqs.embedded_broker,
        sdk=("aiobotocore", "sqs"),
    ),
    "nats": ConnectorKind(
        nats.NatsConfig,
        "nats",
        nats.source,
        nats.publisher,
        embedded=nats.check_reachable,
        sdk=("nats", "nats"),
    ),
    "redis": ConnectorKind(
        redis.RedisConfig,
        "redis",
        redis.source,
        redis.publisher,
        embedded=redis.check_reachable,
        sdk=("redis", "redis"),
    ),
    "webhook": ConnectorKind(
        webhook.WebhookConfig, "webhook", ingress=webhook.ingress, needs_server=True
    ),
    "cron": ConnectorKind(cron.CronConfig, "cron", ingress=cron.ingress),
}

__all__ = [
    "KINDS",
    "ConnectorConfig",
    "ConnectorKind",
    "Delivery",
    "Publisher",
    "Settlement",
    "Source",
]
