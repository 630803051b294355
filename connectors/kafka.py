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
message. The ``publish`` handler sends CloudEvents in binary mode with ``ce_`` headers.

Security: TLS (CA, client certificate and key) and SASL (PLAIN, SCRAM-SHA-256/512,
OAUTHBEARER through a token provider). Secrets come from ``${VAR}`` or ``${file:PATH}``.

This module holds the config, the connection options and the publisher; the source is
``connectors.kafka_source`` and its bookkeeping ``connectors.kafka_intake``. aiokafka
is imported lazily, so the config schema needs no Kafka client.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from bridge.duration import Duration
from bridge.errors import ConnectorError
from bridge.transport import ConnectorConfig, ConsumeConfig

if TYPE_CHECKING:
    from connectors.kafka_source import KafkaSource

# --------------------------------------------------------------------------- config


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
        "none", description="Batch compression (snappy, lz4 and zstd need the `cramjam` package)."
    )
    linger: Duration = Field(
        0.0, description="How long a message may wait for others to fill its batch."
    )
    max_batch_bytes: int = Field(16_384, ge=1, description="Largest batch per partition.")
    request_timeout: Duration = Field(30.0, description="How long a send may wait for the broker.")


class KafkaConfig(ConnectorConfig):
    """A Kafka cluster (any broker speaking the Kafka protocol)."""

    type: Literal["kafka"] = "kafka"
    bootstrap_servers: list[str] = Field(
        min_length=1, description="`host:port` of one or more brokers (a list or comma-separated)."
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


def client_options(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection keyword arguments shared by aiokafka's consumer, producer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": cfg.bootstrap_servers,
        "client_id": cfg.client_id,
    }
    protocol = "PLAINTEXT"
    if cfg.tls is not None:
        from aiokafka.helpers import create_ssl_context

        tls = cfg.tls
        context = create_ssl_context(
            cafile=tls.ca_file,
            certfile=tls.cert_file,
            keyfile=tls.key_file,
            password=tls.key_password.get_secret_value() if tls.key_password else None,
        )
        context.check_hostname = tls.check_hostname
        options["ssl_context"] = context
        protocol = "SSL"
    if cfg.sasl is not None:
        sasl = cfg.sasl
        protocol = "SASL_SSL" if cfg.tls is not None else "SASL_PLAINTEXT"
        options["sasl_mechanism"] = sasl.mechanism
        if sasl.mechanism == "OAUTHBEARER":
            options["sasl_oauth_token_provider"] = token_provider(sasl)
        else:
            options["sasl_plain_username"] = sasl.username
            options["sasl_plain_password"] = (
                sasl.password.get_secret_value() if sasl.password else None
            )
    options["security_protocol"] = protocol
    return options


def token_provider(sasl: KafkaSASL) -> Any:
    """The aiokafka ``AbstractTokenProvider`` for an OAUTHBEARER config."""
    from aiokafka.abc import AbstractTokenProvider

    from bridge.events import import_object

    if sasl.token_file is not None:
        path = Path(sasl.token_file)

        class FileToken(AbstractTokenProvider):  # type: ignore[misc]
            async def token(self) -> str:
                return (await asyncio.to_thread(path.read_text)).strip()

        return FileToken()
    target = import_object(str(sasl.token_provider))
    if isinstance(target, type):
        target = target()
    if isinstance(target, AbstractTokenProvider):
        return target
    if not callable(target):
        raise ConnectorError(
            f"token_provider {sasl.token_provider!r} is not callable", retriable=False
        )
    function = target

    class CallableToken(AbstractTokenProvider):  # type: ignore[misc]
        async def token(self) -> str:
            value = function()
            if inspect.isawaitable(value):
                value = await value
            return str(value)

    return CallableToken()


def milliseconds(seconds: float) -> int:
    """A duration for aiokafka (whole milliseconds, at least 1)."""
    return max(int(seconds * 1000), 1)


def connection_options(cfg: KafkaConfig) -> dict[str, Any]:
    """``client_options``, with any failure (unreadable certificate, bad token provider)
    raised as a non-retriable ``ConnectorError``."""
    try:
        return client_options(cfg)
    except ConnectorError:
        raise
    except Exception as exc:
        raise ConnectorError(f"kafka connection settings: {exc}", retriable=False) from exc


def retriable(exc: BaseException) -> bool:
    """False for errors that retrying cannot fix (authorization, authentication, bad topic)."""
    from aiokafka import errors

    fatal = (
        errors.TopicAuthorizationFailedError,
        errors.GroupAuthorizationFailedError,
        errors.ClusterAuthorizationFailedError,
        errors.SaslAuthenticationFailed,
        errors.UnsupportedSaslMechanismError,
        errors.AuthenticationFailedError,
        errors.AuthenticationMethodNotSupported,
        errors.InvalidTopicError,
    )
    return not isinstance(exc, fatal)


# --------------------------------------------------------------------------- publisher


class KafkaPublisher:
    """Sends messages to topics (``destination`` is the topic) with ``acks=all``.

    ``publish()`` returns once the broker has acknowledged the message; a failure
    raises ``ConnectorError``. The producer starts on ``start()`` (or the first
    publish) and stops on ``close()``.
    """

    ce_prefix = "ce_"  # CloudEvents Kafka protocol binding

    def __init__(self, cfg: KafkaConfig, name: str) -> None:
        self.cfg = cfg
        self.name = name
        self._producer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        async with self._lock:
            if self._producer is not None:
                return
            p = self.cfg.publish
            try:
                producer = AIOKafkaProducer(
                    acks="all",
                    enable_idempotence=False,  # not every Kafka-protocol broker has it
                    compression_type=None if p.compression == "none" else p.compression,
                    linger_ms=int(p.linger * 1000),
                    max_batch_size=p.max_batch_bytes,
                    request_timeout_ms=milliseconds(p.request_timeout),
                    **connection_options(self.cfg),
                )
            except (RuntimeError, ValueError, AssertionError) as exc:  # e.g. a missing codec
                raise ConnectorError(f"kafka producer settings: {exc}", retriable=False) from exc
            try:
                await producer.start()
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise ConnectorError(
                    f"kafka producer could not start: {exc!r}", retriable=retriable(exc)
                ) from exc
            self._producer = producer

    async def publish(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None
    ) -> None:
        from aiokafka.errors import KafkaError

        if self._producer is None:
            await self.start()
        try:
            await self._producer.send_and_wait(
                destination,
                body,
                key=key.encode() if key is not None else None,
                headers=[(k, v.encode()) for k, v in headers.items()],
            )
        except KafkaError as exc:
            raise ConnectorError(
                f"kafka publish to {destination!r} failed: {exc!r}", retriable=retriable(exc)
            ) from exc

    async def close(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def source(cfg: KafkaConfig, name: str) -> KafkaSource:
    from connectors.kafka_source import KafkaSource

    return KafkaSource(cfg, name)


def publisher(cfg: KafkaConfig, name: str) -> KafkaPublisher:
    return KafkaPublisher(cfg, name)
