"""Connector kinds. ``KINDS`` is the explicit registry; plugins add kinds through the
``bridge.connectors`` entry-point group (each entry point names a ``ConnectorKind``).

A connector module must import its broker SDK lazily (inside the Source or
Publisher), so the config schema knows every kind even without its extra installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors import cron, kafka, memory, rabbitmq, sqs, webhook
from connectors.base import (
    ConnectorConfig,
    Delivery,
    Ingress,
    IngressEnv,
    Publisher,
    Settlement,
    Source,
)


@dataclass(frozen=True, slots=True)
class ConnectorKind:
    """A connector kind: its config model, and factories ``(cfg, name) -> Source | Publisher``
    or, for connectors fed over the bridge's HTTP server, ``(cfg, name, env) -> Ingress``.

    ``transport`` prefixes the transport metadata of events (``kafka.partition``).
    """

    config: type[ConnectorConfig]
    transport: str
    source: Callable[[Any, str], Source] | None = None
    publisher: Callable[[Any, str], Publisher] | None = None
    ingress: Callable[[Any, str, IngressEnv], Ingress] | None = None
    needs_server: bool = False
    """The ingress mounts routes on the bridge's HTTP server (webhooks; not cron)."""


KINDS: dict[str, ConnectorKind] = {
    "memory": ConnectorKind(memory.MemoryConfig, "memory", memory.source, memory.publisher),
    "kafka": ConnectorKind(kafka.KafkaConfig, "kafka", kafka.source, kafka.publisher),
    "rabbitmq": ConnectorKind(rabbitmq.RabbitMQConfig, "amqp", rabbitmq.source, rabbitmq.publisher),
    "sqs": ConnectorKind(sqs.SqsConfig, "sqs", sqs.source, sqs.publisher),
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
