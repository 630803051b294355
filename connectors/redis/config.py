"""The config of ``type: redis``: the server, the stream and consumer group to consume.

Pydantic models only; nothing here imports redis-py.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.duration import Duration
from bridge.transport import ConnectorConfig, ConsumeConfig


class RedisTLSConfig(BaseModel):
    """TLS for ``rediss://`` URLs."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = Field(
        None, description="PEM file of the CA(s) that sign the server's certificate."
    )
    cert_file: str | None = Field(None, description="Client certificate (PEM), for mutual TLS.")
    key_file: str | None = Field(None, description="Private key of the client certificate (PEM).")
    verify: bool = Field(
        True, description="Verify the server's certificate and host name (never off in production)."
    )


class SentinelConfig(BaseModel):
    """Find the master through Redis Sentinel instead of ``url``'s host."""

    model_config = ConfigDict(extra="forbid")

    hosts: list[str] = Field(min_length=1, description="Sentinels as `host:port`.")
    service: str = Field(description="The master's service name (`sentinel monitor <name>`).")
    username: str | None = Field(None, description="ACL user of the sentinels, if they need one.")
    password: str | None = Field(None, description="Password of the sentinels (use ${ENV}).")


class RedisConsumeConfig(ConsumeConfig):
    """Consume one stream through a consumer group."""

    stream: str = Field(description="Stream key to consume.")
    group: str = Field(description="Consumer group (shared by every replica of the bridge).")
    consumer: str | None = Field(
        None,
        description="Consumer name within the group. Default: `<hostname>-<pid>`, one per "
        "process; entries a dead consumer left pending are claimed after `claim_idle`.",
    )
    declare: bool = Field(
        False,
        description="Create the group (and the stream, MKSTREAM) if missing. Without it the "
        "group must exist.",
    )
    start_id: str = Field(
        "0",
        description="Where a group created by `declare` starts: `0` (the whole stream) or `$` "
        "(new entries only).",
    )
    batch: int | None = Field(
        None, ge=1, description="COUNT of one XREADGROUP. Default: min(max_in_flight, 500)."
    )
    block: Duration = Field(1.0, gt=0, description="How long one XREADGROUP waits for entries.")
    claim_idle: Duration = Field(
        30.0,
        gt=0,
        description="Entries pending this long (their consumer died) are claimed with "
        "XAUTOCLAIM. Entries in flight here are kept fresh, so this does not bound run time.",
    )
    claim_interval: Duration = Field(
        5.0, gt=0, description="How often pending entries are claimed and the lag refreshed."
    )
    max_deliveries: int = Field(
        10,
        ge=1,
        description="An entry delivered more often (crashes, RETRY_LATER) is dead-lettered "
        "with reason `delivery_limit` and acked, never left pending for ever.",
    )
    body_field: str = Field(
        "data",
        description="The entry field holding the message body; the other fields are headers. "
        "An entry without it has its fields, as a JSON object, for body.",
    )

    ordering: Literal["key", "partition", "none"] = Field(
        "none",
        description="`key`: one entry per key at a time, in stream order, keys in parallel "
        "(needs `key`); `none` (default): entries run concurrently up to max_in_flight. "
        "`partition` is taken as `key`.",
    )
    key: str | None = Field(
        None,
        description="The ordering key of `ordering: key`: `field:NAME`, the entry field NAME "
        "(a header field, or a field of an entry without a body field). An entry without "
        "it is not ordered.",
    )

    @field_validator("key")
    @classmethod
    def _key_form(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("field:") and len(value) > 6):
            raise ValueError("key is `field:NAME` (an entry field)")
        return value

    @model_validator(mode="after")
    def _orderings(self) -> RedisConsumeConfig:
        if self.ordering != "none" and self.key is None:
            raise ValueError(
                "redis: `ordering: key` needs `key: field:NAME` (the entry field that holds "
                "the ordering key)"
            )
        return self

    @property
    def key_field(self) -> bytes | None:
        """The entry field of the ordering key; None without ordering."""
        if self.ordering == "none" or self.key is None:
            return None
        return self.key.removeprefix("field:").encode()

    @property
    def read_count(self) -> int:
        """COUNT of one XREADGROUP."""
        return self.batch or min(self.max_in_flight, 500)


class RedisPublishConfig(BaseModel):
    """How entries are added."""

    model_config = ConfigDict(extra="forbid")

    maxlen: int | None = Field(
        None, ge=1, description="Trim the stream to about this many entries on every XADD."
    )
    approximate: bool = Field(
        True, description="Trim with `MAXLEN ~` (cheap, whole macro nodes) rather than `=`."
    )


class RedisConfig(ConnectorConfig):
    """A Redis server: consume a stream through a consumer group, publish with XADD."""

    type: Literal["redis"] = Field("redis", description="Connector kind: Redis Streams.")
    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis:// or rediss:// (TLS) URL; may hold `user:password@` (use ${ENV}).",
    )
    username: str | None = Field(None, description="ACL user (overrides the URL's).")
    password: str | None = Field(None, description="Password (overrides the URL's; use ${ENV}).")
    tls: RedisTLSConfig | None = Field(None, description="CA, client certificate and key.")
    sentinel: SentinelConfig | None = Field(
        None, description="Reach the master through Sentinel (the URL then gives db and auth)."
    )
    cluster: bool = Field(False, description="The URL names a Redis Cluster node.")
    connect_timeout: Duration = Field(5.0, gt=0, description="Timeout of one connection attempt.")
    command_timeout: Duration = Field(
        10.0, gt=0, description="Timeout of one command (besides the XREADGROUP block)."
    )
    max_connections: int = Field(
        50,
        ge=2,
        description="Connections of one client (pool); more concurrent commands wait for one.",
    )
    publish: RedisPublishConfig = Field(
        default_factory=RedisPublishConfig, description="XADD options."
    )
    consume: RedisConsumeConfig | None = Field(
        None, description="Consume a stream; without it the connector is a publish target only."
    )

    @model_validator(mode="after")
    def _one_topology(self) -> RedisConfig:
        if self.sentinel is not None and self.cluster:
            raise ValueError("redis: `sentinel` and `cluster` exclude each other")
        return self
