"""The config of ``type: nats``: servers, credentials, the stream and durable consumer.

Pydantic models only; nothing here imports nats-py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.duration import Duration
from bridge.transport import ConnectorConfig, ConsumeConfig


class NatsTLS(BaseModel):
    """TLS for ``tls://`` servers (or any server that requires it)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(None, description="PEM file of the CA(s) of the server.")
    cert_file: str | None = Field(None, description="Client certificate (PEM), for mutual TLS.")
    key_file: str | None = Field(None, description="Private key of the client certificate.")
    verify: bool = Field(
        True, description="Verify the server's certificate and host name (never off in production)."
    )
    hostname: str | None = Field(None, description="Expected server name, when not the URL's.")


class StreamDeclaration(BaseModel):
    """Create the stream when it is missing (an existing stream is never changed) and
    create or update the durable consumer with the settings of ``consume``."""

    model_config = ConfigDict(extra="forbid")

    subjects: list[str] = Field(
        default_factory=list,
        description="Subjects the stream stores. Default: the consumer's `subjects`.",
    )
    storage: Literal["file", "memory"] = Field("file", description="Stream storage.")
    max_age: Duration | None = Field(None, gt=0, description="Drop messages older than this.")
    duplicate_window: Duration = Field(
        120.0, gt=0, description="How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate."
    )
    replicas: int = Field(1, ge=1, le=5, description="Stream replicas (clustered JetStream).")


class NatsConsumeConfig(ConsumeConfig):
    """Consume a JetStream stream through a durable pull consumer."""

    stream: str = Field(description="JetStream stream name.")
    durable: str = Field(description="Durable consumer name (shared by every replica).")
    subjects: list[str] = Field(
        default_factory=list,
        description="Filter subjects of the consumer (wildcards allowed). Empty: all the stream.",
    )
    declare: StreamDeclaration | None = Field(
        None,
        description="Create the stream if missing and create/update the consumer. Without it "
        "the consumer must exist (it is bound, never changed).",
    )
    ack_wait: Duration = Field(
        30.0,
        gt=0,
        description="Consumer ack_wait (with `declare`). Held messages get an in-progress ack "
        "(+WPI) well before it runs out, so long runs are not redelivered.",
    )
    max_deliver: int = Field(
        -1,
        description="Consumer max_deliver (with `declare`); -1: unlimited. JetStream stops "
        "delivering a message after this many deliveries (crash redeliveries count too).",
    )
    retry_delay: Duration = Field(
        1.0, ge=0, description="Delay of the nak that hands back a message to redeliver."
    )
    ordering: Literal["key", "partition", "none"] = Field(
        "none",
        description="`key`: one message per key at a time, in stream order; `none` (default): "
        "no ordering (a subject often carries every message). `partition` is taken as `key`.",
    )
    key: str = Field(
        "subject",
        description="The ordering key: `subject` (the message subject) or `header:NAME`.",
    )
    fetch_batch: int = Field(100, ge=1, le=10_000, description="Most messages per pull request.")
    fetch_wait: Duration = Field(1.0, gt=0, description="How long one pull request waits.")
    health_interval: Duration = Field(
        5.0, gt=0, description="How often the consumer's pending count (lag) is read."
    )

    @field_validator("key")
    @classmethod
    def _key_form(cls, value: str) -> str:
        if value != "subject" and not (value.startswith("header:") and len(value) > 7):
            raise ValueError("key is `subject` or `header:NAME`")
        return value

    @model_validator(mode="after")
    def _declared_subjects(self) -> NatsConsumeConfig:
        if self.declare is not None and not (self.declare.subjects or self.subjects):
            raise ValueError("declare needs subjects (declare.subjects or consume.subjects)")
        return self


class NatsConfig(ConnectorConfig):
    """A NATS server (or cluster) with JetStream: consume a stream, publish to subjects."""

    type: Literal["nats"] = Field("nats", description="Connector kind: NATS JetStream.")
    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"],
        min_length=1,
        description="nats:// or tls:// URLs (user:password@ in a URL works too).",
    )
    tls: NatsTLS | None = Field(None, description="CA, client certificate and key.")
    credentials_file: str | None = Field(
        None, description="A `.creds` file (JWT and NKey seed), for decentralized auth."
    )
    nkey_seed_file: str | None = Field(None, description="An NKey seed file (NKey auth).")
    user: str | None = Field(None, description="User name (user/password auth).")
    password: str | None = Field(None, description="Password (use ${file:...} or ${ENV}).")
    token: str | None = Field(None, description="Token auth (use ${file:...} or ${ENV}).")
    connect_timeout: Duration = Field(5.0, gt=0, description="Timeout of one connection attempt.")
    reconnect_wait: Duration = Field(1.0, gt=0, description="Pause between reconnect attempts.")
    publish_timeout: Duration = Field(
        10.0, gt=0, description="How long a publish waits for JetStream's publish ack."
    )
    consume: NatsConsumeConfig | None = Field(
        None, description="Consume a stream; without it the connector is a publish target only."
    )
