"""The config of ``type: rabbitmq``: the broker, the queue to consume and its declaration.

Pydantic models only; nothing here imports aio-pika.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.duration import Duration
from bridge.transport import ConnectorConfig, ConsumeConfig

MAX_PREFETCH = 65_535  # basic.qos prefetch_count is a short


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
        """The basic.qos prefetch: ``prefetch``, else ``max_in_flight`` (at most 65535)."""
        return self.prefetch or min(self.max_in_flight, MAX_PREFETCH)


class RabbitMQConfig(ConnectorConfig):
    """A RabbitMQ broker: consume a queue, publish to exchanges."""

    type: Literal["rabbitmq"] = Field(
        "rabbitmq", description="Connector kind: RabbitMQ (AMQP 0-9-1)."
    )
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
