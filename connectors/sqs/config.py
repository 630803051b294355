"""The config of ``type: sqs``: the endpoint, the queue to consume, how to publish.

Pydantic models only; nothing here imports aiobotocore.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.duration import Duration
from bridge.templates import Template
from bridge.transport import ConnectorConfig, ConsumeConfig

TEMPLATE_ROOTS = frozenset({"key", "header", "headers"})
"""What the FIFO id templates of ``publish`` may name."""


class SqsConsumeConfig(ConsumeConfig):
    """How to consume one SQS queue."""

    queue: str = Field(description="Queue name (resolved with GetQueueUrl) or queue URL.")
    receivers: int = Field(
        4,
        ge=1,
        le=64,
        description="Concurrent ReceiveMessage long polls (one at a time on an ordered FIFO queue).",
    )
    batch_size: int = Field(10, ge=1, le=10, description="Most messages asked for per receive.")
    wait_time_seconds: int = Field(
        20, ge=0, le=20, description="Long-poll wait of each receive (0..20 s)."
    )
    visibility_timeout: int | None = Field(
        None,
        ge=1,
        le=43_200,
        description="Visibility timeout in whole seconds set on receive and on each heartbeat "
        "extension. Default: the queue's VisibilityTimeout attribute.",
    )
    depth_interval: Duration = Field(
        15.0, gt=0, description="How often the queue depth is read for metrics and /readyz."
    )
    ordering: Literal["key", "partition", "none"] = Field(
        "key",
        description="FIFO queues: `key` (or `partition`) runs one message per MessageGroupId "
        "at a time, in order; `none` runs a group's received messages concurrently. "
        "Standard queues have no order.",
    )

    @model_validator(mode="after")
    def _correlation_attribute(self) -> SqsConsumeConfig:
        # Publishers (ours included) carry the correlation id as a message attribute.
        if not self.event.correlation_id:
            self.event = self.event.model_copy(
                update={"correlation_id": ["header:x-correlation-id"]}
            )
        return self


class SqsPublishConfig(BaseModel):
    """How messages are sent (see ``connectors.sqs_publish``)."""

    model_config = ConfigDict(extra="forbid")

    group_id: str = Field(
        "{key|default:default}",
        description="FIFO MessageGroupId template over `{key}` (the publish handler's key) "
        "and `{header.NAME}`.",
    )
    deduplication_id: str | None = Field(
        None,
        description="FIFO MessageDeduplicationId template. Default: the `ce-id` header, "
        "else a SHA-256 of group, body and headers.",
    )
    concurrency: int = Field(
        4, ge=1, le=64, description="SendMessageBatch calls in flight per standard queue."
    )
    linger: Duration = Field(
        0.005, le=1.0, description="How long a batch waits for more messages before it is sent."
    )
    max_batch_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=1_048_576,
        description="Most payload bytes per SendMessageBatch call (and per message).",
    )

    @field_validator("group_id", "deduplication_id")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            Template(value, TEMPLATE_ROOTS)  # raises a ValueError naming the problem
        return value


class SqsConfig(ConnectorConfig):
    """An SQS endpoint: a queue to consume (``consume``) and/or queues to publish to.

    Credentials come from the standard AWS chain, never from this file.
    """

    type: Literal["sqs"] = Field(
        "sqs", description="Connector kind: Amazon SQS (or a compatible endpoint)."
    )
    region: str | None = Field(
        None,
        description="AWS region. Default: AWS_REGION / AWS_DEFAULT_REGION / the profile, "
        "else the region in a queue URL.",
    )
    endpoint_url: str | None = Field(
        None, description="Endpoint override for local SQS (moto, LocalStack, ElasticMQ)."
    )
    profile: str | None = Field(
        None, description="Shared config profile name. Default: AWS_PROFILE or `default`."
    )
    consume: SqsConsumeConfig | None = Field(
        None, description="Consume one queue; without it the connector is a publish target only."
    )
    publish: SqsPublishConfig = Field(
        default_factory=SqsPublishConfig, description="How messages are published."
    )
