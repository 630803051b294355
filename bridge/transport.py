"""The transport contracts: ``Delivery``, ``Source`` and ``Publisher``.

A connector module holds one pydantic config model (``type: Literal[...]``) and
its ``Source`` and/or ``Publisher``. The bridge core only sees these protocols.

Contract of a Source:
    * ``deliveries()`` yields one ``Delivery`` per message. The settle callable
      travels with the message; the runtime calls it exactly once.
    * ``settle(ACK)``: the message is done (every run final, or dead-lettered).
      The transport makes it gone for good: Kafka commits the finished prefix,
      RabbitMQ acks, SQS deletes.
    * ``settle(RETRY_LATER)``: not done; let the transport redeliver it (shutdown,
      lost ownership). Never used because a handler failed.
    * ``stop_intake()`` (optional, ``StopsIntake``) is called when the drain begins: a
      source that receives in the background stops receiving then.
    * ``stop(deadline)`` is called once intake has stopped and in-flight
      deliveries are settled (or abandoned at the drain deadline); it closes the
      transport. It is idempotent.

Giving up: a source that must not deliver a message again (over the transport's
delivery limit, as counted by a broker without dead-lettering of its own) sets
``meta["reject_reason"]`` (and optionally ``meta["reject_detail"]``): the message is
then dead-lettered with that reason, runs nothing, and is settled ``ACK``.

Stable ids: a source puts a transport message id in ``meta["message_id"]``
when the transport has one that survives redelivery (SQS MessageId, AMQP
message_id, Kafka ``topic-partition-offset``). Normalization uses it as the
event id when the message is not a CloudEvent, so the ledger recognizes a
redelivered message.

An event shows its delivery's ``meta`` as ``Event.transport``: a ``TransportMeta``, a
read-only view with each name behind the transport's prefix (``kafka.partition``). A
source fills ``meta`` before it hands the delivery over and leaves it alone after.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from bridge.duration import Duration
from bridge.embedded import Brokers
from bridge.frozen import fast_init


class Settlement(enum.Enum):
    """How a delivery ends: ``ACK`` (done) or ``RETRY_LATER`` (redeliver)."""

    ACK = "ack"
    RETRY_LATER = "retry_later"


SettleFn = Callable[[Settlement], Awaitable[None]]


async def _settle_nothing(_: Settlement) -> None:
    return None


def _refuse_nothing(_: str) -> None:
    return None


@fast_init
@dataclass(frozen=True, slots=True)
class Delivery:
    """One message from a transport, with the means to settle it.

    Attributes:
        body: the raw message body.
        headers: transport headers / attributes, decoded to str.
        meta: transport metadata (``topic``, ``partition``, ``offset``, ``key``,
            ``routing_key``, ``receive_count``, ``message_id`` ...).
        settle: called exactly once by the runtime with the final ``Settlement``.
        connector: name of the connector the message came from (set by the runtime
            when the source does not).
        event: the ``bridge.events.Event`` that ``body`` holds, already built and
            validated in this process (the inbox hands over what a webhook just
            stored), so it is not decoded again; None: decode ``body``.
    """

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    settle: SettleFn = _settle_nothing
    connector: str = ""
    event: Any = None


@runtime_checkable
class Source(Protocol):
    """Something that yields deliveries."""

    async def start(self) -> None:
        """Connect and begin intake. Raises ``ConnectorError`` if it cannot."""

    def deliveries(self) -> AsyncIterator[Delivery]:
        """The stream of deliveries; ends after ``stop()``."""

    async def stop(self, deadline: float) -> None:
        """Stop intake and close by ``deadline`` (a ``loop.time()`` value). Idempotent."""


@runtime_checkable
class StopsIntake(Protocol):
    """Optional: a source that receives in the background (long polls, prefetch) and can
    stop receiving before it is stopped, so nothing is taken off the broker during the
    drain."""

    async def stop_intake(self) -> None:
        """Receive no more messages and give back what was received but not handed out;
        deliveries handed out can still be settled. Idempotent; ``stop()`` still follows."""


@runtime_checkable
class Publisher(Protocol):
    """Something that sends a message to a destination of a transport."""

    async def publish(
        self,
        destination: str,
        body: bytes,
        headers: Mapping[str, str],
        key: str | None,
    ) -> None:
        """Send one message; return only once the transport has accepted it.

        Raises:
            ConnectorError: the transport refused or could not be reached.
        """


@runtime_checkable
class Ingress(Protocol):
    """A connector fed over the bridge's own HTTP server (webhooks).

    It contributes routes; each request is checked, parsed and validated by the
    ingress, then handed to ``IngressEnv.accept``, which commits the events to
    the store's inbox before the ingress answers. The inbox then delivers them
    like any source, so a crash after the answer loses nothing.
    """

    def routes(self) -> list[Any]:
        """aiohttp route definitions (``aiohttp.web.post(path, handler)``) to mount."""


@dataclass(slots=True)
class IngressEnv:
    """What the runtime gives an ingress.

    Attributes:
        accept: durably store events (``bridge.events.Event``, their data validated by
            ``catalog``) in the inbox; returns, per event, True if new and False if its
            id was already accepted. The inbox hands the new events to delivery as they
            are (``Delivery.event``), without decoding their bodies again.
        catalog: the event catalog, to validate data before answering.
        max_body_bytes: the bridge's body limit (a connector may set a lower one).
        store: the state store (``bridge.store.Store``), e.g. for cron positions.
        refused: called with the reason of each request refused for what it sent
            (malformed, too large, invalid event; not for a failed authentication),
            so invalid input is counted like a broker's (``bridge_events_invalid_total``).
    """

    accept: Callable[[Any], Awaitable[list[bool]]]
    catalog: Any
    max_body_bytes: int
    store: Any = None
    refused: Callable[[str], None] = _refuse_nothing


@runtime_checkable
class Background(Protocol):
    """Optional: an ingress with work of its own (a cron schedule), which the runtime
    runs as a task once the store is open and cancels when intake stops."""

    async def run(self) -> None:
        """Run until cancelled."""


@runtime_checkable
class HasStatus(Protocol):
    """Optional: a source or publisher that can report its health and backlog."""

    def status(self) -> ConnectorStatus:
        """A snapshot of connection state and backlog, for /readyz and metrics."""


@dataclass(slots=True)
class ConnectorStatus:
    """A connector's health and backlog, as shown by /readyz and metrics."""

    connected: bool
    detail: str = ""
    lag: Mapping[str, float] = field(default_factory=dict)


class EventMapping(BaseModel):
    """How a non-CloudEvents message becomes an event.

    Templates use ``{...}`` over ``data.*`` (the JSON body), ``header.NAME``,
    ``meta.NAME`` and ``connector``; e.g. ``"db/{data.table}.{data.type}"``.
    """

    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(
        None, description="Event type template; required unless messages are CloudEvents."
    )
    source: str | None = Field(None, description="CloudEvents source template.")
    id: str | None = Field(
        None,
        description="Event id template. Default: the CloudEvent id, else the transport's "
        "stable message id, else a random id.",
    )
    subject: str | None = Field(None, description="CloudEvents subject template.")
    correlation_id: list[str] = Field(
        default_factory=list,
        description="Where to find the correlation id, first match wins: "
        "`header:NAME`, `data.PATH`, `meta.NAME`.",
    )
    data: str | None = Field(
        None,
        description="Path of the event data inside the body (e.g. `payload`); default whole body.",
    )


class ConsumeConfig(BaseModel):
    """What every consuming connector shares: the event mapping and backpressure."""

    model_config = ConfigDict(extra="forbid")

    event: EventMapping = Field(
        default_factory=EventMapping,
        description="How a message that is not a CloudEvent becomes an event: type, id, "
        "source, subject, correlation id and data templates.",
    )
    max_in_flight: int = Field(
        1000, ge=1, description="Most deliveries being processed at once (backpressure)."
    )
    max_body_bytes: int | None = Field(
        None, ge=1, description="Larger bodies are dead-lettered. Default: the bridge's limit."
    )
    ordering: Literal["key", "partition", "none"] = Field(
        "none", description="Transports that can order (Kafka, SQS FIFO) honour it."
    )
    format: Literal["json", "cloudevents", "debezium", "supabase"] = Field(
        "json",
        description="What the bodies are (bridge.formats): `json` (mapped by `event:`; a "
        "CloudEvent is kept as it is), `cloudevents` (only CloudEvents), `debezium` (every "
        "Debezium record kind, as on a Debezium webhook) or `supabase`.",
    )
    tombstones: Literal["drop", "event"] = Field(
        "drop",
        description="A tombstone (a Kafka record with a null value, written after each delete "
        "on a compacted topic): acknowledged and dropped (`drop`, the default), or a "
        "`db/tombstone` event with the key (`event`).",
    )
    snapshot: Literal["read", "insert"] = Field(
        "read", description="debezium: report snapshot reads (op r) as `read` or as `insert`."
    )
    inline_retry_limit: Duration | None = Field(
        None,
        description="A retry whose delay is longer than this is parked in the store and the "
        "message settled. Default: `defaults.inline_retry_limit` (30s).",
    )


class ConnectorConfig(BaseModel):
    """Base of every connector's config model. Subclasses set ``type: Literal[...]``."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="The connector kind.")
    consume: ConsumeConfig | None = Field(
        None, description="Consume from this connector; without it it is a publish target only."
    )


@dataclass(frozen=True, slots=True)
class ConnectorKind:
    """A connector kind: its config model, and factories ``(cfg, name) -> Source | Publisher``
    or, for connectors fed over the bridge's HTTP server, ``(cfg, name, env) -> Ingress``.

    ``transport`` prefixes the transport metadata of events (``kafka.partition``).
    ``embedded`` is how ``bridge dev`` gives its connectors a local broker.
    """

    config: type[ConnectorConfig]
    transport: str
    source: Callable[[Any, str], Source] | None = None
    publisher: Callable[[Any, str], Publisher] | None = None
    ingress: Callable[[Any, str, IngressEnv], Ingress] | None = None
    needs_server: bool = False
    """The ingress mounts routes on the bridge's HTTP server (webhooks; not cron)."""
    sdk: tuple[str, str] | None = None
    """``(module, extra)``: the SDK the kind imports lazily and the package extra that
    installs it, e.g. ``("aiokafka", "kafka")``. The config check names the extra when
    the module is missing, instead of an ImportError when the connector starts."""
    embedded: Callable[[str, Any, Brokers], None] | None = None
    """Dev mode only: ``(name, cfg, brokers)``, called by ``bridge dev`` (unless
    ``--no-brokers``) for each connector of this kind, on every load of the config,
    in a worker thread (it may block). When the connector's broker cannot be reached
    and a local one would do, it starts an embedded broker (or reuses the one in
    ``brokers.running`` at that address, so it survives reloads), records it there,
    points ``cfg`` at it (the config is changed in place) and creates the topics or
    queues the connector consumes. A connector whose broker answers is left alone.
    It raises ``BridgeError`` when the broker cannot be started. The hook imports
    its broker SDK or tool lazily; the engine imports none."""


class TransportMeta(Mapping[str, Any]):
    """A delivery's transport metadata as an event shows it: read-only, each key behind
    the transport's prefix (``partition`` is ``kafka.partition``).

    A view of the delivery's own ``meta`` (complete once the delivery is handed over),
    not a copy: an event is made for every delivery and its ``transport`` is seldom
    read, so nothing is copied until it is.
    """

    __slots__ = ("_meta", "_prefix")

    def __init__(self, meta: Mapping[str, Any], prefix: str) -> None:
        self._meta = meta
        self._prefix = prefix

    def __getitem__(self, key: str) -> Any:
        prefix = self._prefix
        if type(key) is str and key.startswith(prefix):
            return self._meta[key[len(prefix) :]]
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        prefix = self._prefix
        return type(key) is str and key.startswith(prefix) and key[len(prefix) :] in self._meta

    def __iter__(self) -> Iterator[str]:
        prefix = self._prefix
        return (prefix + key for key in self._meta)

    def __len__(self) -> int:
        return len(self._meta)

    def __repr__(self) -> str:
        return f"TransportMeta({dict(self)!r})"
