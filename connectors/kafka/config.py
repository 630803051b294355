"""The config of ``type: kafka``: the cluster, TLS, SASL, consuming and publishing.

Pydantic models only; nothing here imports aiokafka.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bridge.duration import Duration
from bridge.transport import ConnectorConfig, ConsumeConfig


def _servers_schema(schema: dict[str, Any]) -> None:
    # The validator below also takes one comma-separated string.
    listed = {k: schema.pop(k) for k in ("type", "items", "minItems") if k in schema}
    schema["anyOf"] = [{"type": "string", "minLength": 1}, listed]
    schema["examples"] = ["kafka-1:9092,kafka-2:9092", ["kafka-1:9092", "kafka-2:9092"]]


class KafkaTLS(BaseModel):
    """TLS to the brokers (``SSL`` or ``SASL_SSL``)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(
        None,
        description="CA bundle (PEM) that signed the brokers' certificates; default: system CAs.",
    )
    cert_file: str | None = Field(None, description="Client certificate (PEM), for mutual TLS.")
    key_file: str | None = Field(None, description="Client private key (PEM), for mutual TLS.")
    key_password: SecretStr | None = Field(
        None, description="Password of `key_file`; give it as `${VAR}` or `${file:PATH}`."
    )
    check_hostname: bool = Field(
        True, description="Check that a broker's certificate names the host it was reached at."
    )

    @model_validator(mode="after")
    def _pair(self) -> KafkaTLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class KafkaSASL(BaseModel):
    """SASL authentication (``SASL_PLAINTEXT``, or ``SASL_SSL`` with ``tls``)."""

    model_config = ConfigDict(extra="forbid")

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = Field(
        description="SASL mechanism."
    )
    username: str | None = Field(None, description="User name (PLAIN and SCRAM).")
    password: SecretStr | None = Field(
        None,
        description="Password (PLAIN and SCRAM); give it as `${VAR}` or `${file:PATH}`, "
        "never in the file.",
    )
    token_provider: str | None = Field(
        None,
        description="OAUTHBEARER: `package.module:name` of an aiokafka `AbstractTokenProvider` "
        "(class or instance) or of a function (sync or async) returning the token.",
    )
    token_file: str | None = Field(
        None,
        description="OAUTHBEARER: read the token from this file at every authentication "
        "(a rotated token is picked up).",
    )

    @model_validator(mode="after")
    def _credentials(self) -> KafkaSASL:
        if self.mechanism == "OAUTHBEARER":
            if (self.token_provider is None) == (self.token_file is None):
                raise ValueError("OAUTHBEARER needs exactly one of token_provider or token_file")
        elif self.username is None or self.password is None:
            raise ValueError(f"{self.mechanism} needs username and password")
        return self


class KafkaConsumeConfig(ConsumeConfig):
    """Consuming: a consumer group over topics, with the bridge committing offsets."""

    topics: list[str] = Field(min_length=1, description="Topics to consume.")
    group_id: str = Field(
        min_length=1, description="Consumer group; replicas share its partitions."
    )
    start_from: Literal["earliest", "latest"] = Field(
        "latest",
        description="Where a group without committed offsets starts: the oldest message or "
        "only new ones.",
    )
    ordering: Literal["key", "partition", "none"] = Field(
        "key",
        description="`key`: one message per key at a time, different keys concurrently; "
        "`partition`: one message per partition at a time; `none`: no ordering.",
    )
    commit_interval: Duration = Field(
        1.0, description="How often finished offsets are committed (also on revoke and shutdown)."
    )
    revoke_timeout: Duration = Field(
        10.0,
        description="On a rebalance, how long in-flight runs of revoked partitions may take to "
        "finish before the partitions are released; later ones are redelivered to the new owner.",
    )
    max_uncommitted: int = Field(
        10_000,
        ge=1,
        description="A partition is paused when this many of its offsets wait behind its oldest "
        "unfinished message (bounds what a crash redelivers).",
    )
    session_timeout: Duration = Field(
        10.0, description="Group session timeout: a member silent this long is removed."
    )
    heartbeat_interval: Duration = Field(
        3.0, description="Heartbeat period (background; a slow handler does not delay it)."
    )
    max_poll_interval: Duration = Field(
        300.0,
        description="Kafka's poll deadline; the bridge keeps polling (paused partitions too), "
        "so slow handlers do not hit it.",
    )
    fetch_max_wait: Duration = Field(
        0.5, description="How long the broker may hold a fetch waiting for new messages."
    )


class KafkaPublishConfig(BaseModel):
    """Publishing: ``acks=all`` always; the idempotent producer is never used."""

    model_config = ConfigDict(extra="forbid")

    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none",
        description="Batch compression (the `kafka` extra installs every codec).",
    )
    linger: Duration = Field(
        0.0, description="How long a message may wait for others to fill its batch."
    )
    max_batch_bytes: int = Field(16_384, ge=1, description="Largest batch per partition.")
    request_timeout: Duration = Field(30.0, description="How long a send may wait for the broker.")


class KafkaConfig(ConnectorConfig):
    """A Kafka cluster (any broker speaking the Kafka protocol)."""

    type: Literal["kafka"] = Field("kafka", description="Connector kind: Apache Kafka.")
    bootstrap_servers: list[str] = Field(
        min_length=1,
        description="`host:port` of one or more brokers (a list or comma-separated).",
        json_schema_extra=_servers_schema,
    )
    client_id: str = Field("bridge", description="Client id the brokers see.")
    tls: KafkaTLS | None = Field(None, description="Connect with TLS.")
    sasl: KafkaSASL | None = Field(None, description="Authenticate with SASL.")
    consume: KafkaConsumeConfig | None = Field(
        None, description="Consume from this cluster; without it it is a publish target only."
    )
    publish: KafkaPublishConfig = Field(
        default_factory=KafkaPublishConfig, description="Producer settings."
    )

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
