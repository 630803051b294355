"""Builds a bridge from its config and kinds: publishers, handlers and their background
work, sources and ingresses, and the dispatcher that joins them. No I/O here; the
``Runtime`` (``bridge.app.runtime``) runs what this builds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.app.kinds import default_kinds
from bridge.cancellation import Canceller
from bridge.clock import Clock, RealClock
from bridge.config import BridgeConfig, Kinds
from bridge.dispatch import BoundHandler, DispatchConfig, DispatchEnv, Dispatcher
from bridge.errors import ConfigError, ConfigIssue
from bridge.events import Event, EventCatalog, load_schema
from bridge.flow import Budgets, HandlerFlow
from bridge.flow.priority import PriorityLimiter
from bridge.handling import DEFAULT_IDEMPOTENCY_KEY, Companion, HandlerConfig, HandlerEnv
from bridge.history import HistoryRecorder
from bridge.inbox import Inbox, InboxSource
from bridge.metrics import Metrics, preset
from bridge.normalize import Normalizer
from bridge.otlp_metrics import OtlpMetrics
from bridge.routing import Router, Subscription, compile_filter
from bridge.scheduler import ParkedSource
from bridge.store import Store, create_store
from bridge.store.instrumented import instrument_store
from bridge.templates import EVENT_ROOTS, Template
from bridge.tracing import Tracing
from bridge.transport import (
    Background,
    ConnectorStatus,
    HasStatus,
    Ingress,
    IngressEnv,
    Publisher,
    Source,
)

_PARKED_SLOTS = 100  # parked runs resumed at once


@dataclass(eq=False)
class SourceSlot:
    """One consuming source with its normalizer, backpressure and in-flight deliveries.

    ``limit`` holds one slot per delivery in flight. It lives as long as the slot, not
    one start of its source: deliveries of a source that failed and restarted still
    hold theirs, so ``max_in_flight`` holds across restarts.
    """

    name: str
    source: Source
    normalizer: Normalizer
    max_in_flight: int
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    started: bool = False
    error: str = ""
    limit: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.limit = asyncio.Semaphore(self.max_in_flight)

    def status(self) -> ConnectorStatus:
        if isinstance(self.source, HasStatus):
            status = self.source.status()
            if not self.started:
                status.connected = False
            return status
        return ConnectorStatus(self.started, self.error)


class Assembly:
    """A bridge built from its config: publishers, handlers, sources, ingresses and the
    dispatcher, wired together (``build()``, no I/O). ``Runtime`` runs it.

    Args:
        cfg: the validated config.
        kinds: the connector and handler kinds to build it with; default
            ``default_kinds()``.
        store: use this store instead of the one named in the config (tests).
        clock: the dispatcher's clock (tests).
    """

    def __init__(
        self,
        cfg: BridgeConfig,
        *,
        kinds: Kinds | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        span_exporter: Any = None,
    ) -> None:
        self.cfg = cfg
        self.kinds = kinds if kinds is not None else default_kinds()
        telemetry = cfg.telemetry
        self.tracing = Tracing(telemetry.traces, telemetry.service_name, exporter=span_exporter)
        self.metrics = Metrics()
        otlp = telemetry.metrics.otlp
        self.otlp_metrics = (
            OtlpMetrics(self.metrics, otlp, telemetry.service_name) if otlp is not None else None
        )
        self.store: Store = store or create_store(cfg.store)
        if hasattr(self.store, "metrics"):  # a database store counts its round trips there
            self.store.metrics = self.metrics
        self.catalog = EventCatalog(
            {name: load_schema(spec.schema_, cfg.base_dir) for name, spec in cfg.events.items()}
        )
        self.inbox = Inbox(self.store)
        self.publishers: dict[str, Publisher] = {}
        self.slots: list[SourceSlot] = []
        self.handlers: dict[str, BoundHandler] = {}
        self.ingresses: dict[str, Ingress] = {}
        self._clock = clock
        self.dispatcher: Dispatcher | None = None
        self.history: HistoryRecorder | None = None
        self.backgrounds: dict[str, Background] = {}

    def _build_publishers(self) -> None:
        kinds = self.kinds.connectors
        wanted = {name for h in self.cfg.handlers for name in h.connector_refs().values()}
        for name in sorted(wanted):
            conn = self.cfg.connectors[name]
            factory = kinds[conn.type].publisher
            if factory is not None:
                self.publishers[name] = factory(conn, name)

    def _build_handlers(self) -> Router[BoundHandler]:
        kinds = self.kinds.handlers
        env = HandlerEnv(
            catalog=self.catalog,
            publishers=self.publishers,
            base_dir=str(self.cfg.base_dir),
            store=self.store,
            wake=self.inbox.wakeup.set,
        )
        defaults = self.cfg.defaults
        budgets = Budgets(self.cfg.retry_budgets, self._clock)
        subs = []
        for hc in self.cfg.handlers:
            handler = kinds[hc.type].build(hc, env)
            if hc.batch is not None and not hasattr(handler, "invoke_batch"):
                issue = f"handler kind {hc.type!r} cannot take batches (python and http can)"
                raise ConfigError([ConfigIssue(f"handlers.{hc.id}.batch", issue)])
            bound = BoundHandler(
                id=hc.id,
                handler=handler,
                retry=hc.retry or defaults.retry,
                timeout=hc.timeout if hc.timeout is not None else defaults.timeout,
                idempotency_key=Template(hc.idempotency_key, EVENT_ROOTS),
                limiter=_limiter(hc),
                flow=HandlerFlow.from_config(hc, budgets, self._clock),
                dead_letter=hc.dead_letter,
                cancel=Canceller(hc.id, hc.cancel_on, self.store) if hc.cancel_on else None,
                batch=hc.batch,
            )
            self.handlers[hc.id] = bound
            program = compile_filter(hc.filter) if hc.filter else None
            subs.append(Subscription(hc.id, tuple(hc.on), bound, hc.filter, program))
            companions = list(getattr(handler, "companions", ()))
            if bound.cancel is not None:
                cancel = bound.cancel
                companions.append(Companion(cancel.id, cancel.on, cancel))
            subs.extend(self._bind_companion(c) for c in companions)

        self._build_backgrounds(env)

        def on_filter_error(handler: str, exc: Exception) -> None:
            self.metrics.inc("bridge_filter_errors_total", (("handler", handler),))

        return Router(subs, on_filter_error)

    def _bind_companion(self, companion: Companion) -> Subscription[BoundHandler]:
        """A handler's companion, bound with the defaults and subscribed with no filter."""
        defaults = self.cfg.defaults
        bound = BoundHandler(
            id=companion.id,
            handler=companion.handler,
            retry=defaults.retry,
            timeout=defaults.timeout,
            idempotency_key=Template(DEFAULT_IDEMPOTENCY_KEY, EVENT_ROOTS),
        )
        self.handlers[companion.id] = bound
        return Subscription(companion.id, companion.on, bound)

    def _build_backgrounds(self, env: HandlerEnv) -> None:
        """The background work of each handler kind that has some and is configured."""
        for type_name, kind in self.kinds.handlers.items():
            if kind.background is None:
                continue
            built = {
                hc.id: self.handlers[hc.id].handler
                for hc in self.cfg.handlers
                if hc.type == type_name
            }
            if built:
                self.backgrounds[type_name] = kind.background(built, env)

    def _build_sources(self) -> None:
        kinds = self.kinds.connectors
        limit = self.cfg.limits.max_body_bytes
        for name, conn in self.cfg.connectors.items():
            if conn.consume is None:
                continue
            kind = kinds[conn.type]
            if kind.source is None:
                continue
            normalizer = Normalizer(
                name,
                kind.transport,
                conn.consume.event,
                self.catalog,
                conn.consume.max_body_bytes or limit,
                payload_format=conn.consume.format,
                tombstones=conn.consume.tombstones,
                snapshot=conn.consume.snapshot,
            )
            self.slots.append(
                SourceSlot(name, kind.source(conn, name), normalizer, conn.consume.max_in_flight)
            )
        self._build_ingresses(kinds, limit)
        # The inbox holds what the event API and webhooks accepted, emitted children,
        # replays, cron ticks and join outcomes: it is always consumed.
        from bridge.transport import EventMapping

        name = "api" if self.cfg.server.enabled and self.cfg.server.api.enabled else "inbox"
        normalizer = Normalizer(name, "inbox", EventMapping(), self.catalog, limit)
        # The leased sources claim no more than their slot's max_in_flight: what they
        # claim and cannot start yet would wait, leased, for a slot.
        slots = self.cfg.server.api.max_in_flight
        source = InboxSource(self.inbox, name=name, capacity=slots, metrics=self.metrics)
        self.slots.append(SourceSlot(name, source, normalizer, slots))
        # Parked retries come back through the scheduler when they are due.
        normalizer = Normalizer("scheduler", "inbox", EventMapping(), self.catalog, limit)
        parked = ParkedSource(self.store, capacity=_PARKED_SLOTS, metrics=self.metrics)
        self.slots.append(SourceSlot("scheduler", parked, normalizer, _PARKED_SLOTS))

    def _build_ingresses(self, kinds: Mapping[str, Any], limit: int) -> None:
        for name, conn in self.cfg.connectors.items():
            factory = getattr(kinds[conn.type], "ingress", None)
            if factory is None:
                continue

            async def accept(events: Any, source: str = name) -> list[bool]:
                return await self.inbox.put_events(list(events), source=source, handover=True)

            def refused(reason: str, connector: str = name) -> None:
                self.metrics.inc(
                    "bridge_events_invalid_total", (("connector", connector), ("reason", reason))
                )

            env = IngressEnv(
                accept=accept,
                catalog=self.catalog,
                max_body_bytes=limit,
                store=self.store,
                refused=refused,
            )
            self.ingresses[name] = factory(conn, name, env)

    def history_enabled(self) -> bool:
        """The run history is on when configured, or by default when the UI is on."""
        enabled = self.cfg.history.enabled
        if enabled is None:
            ui = getattr(self.cfg.server, "ui", None)
            enabled = bool(ui is not None and getattr(ui, "enabled", False))
        return enabled

    def build(self) -> None:
        """Create publishers, handlers, sources and the dispatcher (no I/O)."""
        self._build_publishers()
        router = self._build_handlers()
        self._build_sources()
        cfg = self.cfg
        if self.history_enabled():
            self.history = HistoryRecorder(
                self.store,
                max_age=cfg.history.max_age,
                max_events=cfg.history.max_events,
                max_pending=cfg.history.max_pending,
                metrics=self.metrics,
            )
        env = DispatchEnv(
            self.store,
            metrics=self.metrics,
            clock=self._clock or RealClock(),
            tracing=self.tracing,
            history=self.history,
            emitter=self.emit,
            publishers=self.publishers,
        )
        self.dispatcher = Dispatcher(DispatchConfig.from_config(cfg), router, env)
        preset(
            self.metrics,
            handlers=self.handlers,
            sources=[s.name for s in self.slots],
            leased=[s.name for s in self.slots if isinstance(s.source, InboxSource | ParkedSource)],
            operations=instrument_store(self.store, self.metrics),
            ingresses=list(self.ingresses),
            suspending=[
                h for h, b in self.handlers.items() if getattr(b.handler, "can_suspend", 0)
            ],
            cancellable=[h for h, b in self.handlers.items() if b.cancel is not None],
        )

    async def emit(self, events: list[Event[Any]] | Any) -> None:
        """Durably queue events emitted by handlers (deduplicated by id)."""
        await self.inbox.put_events(list(events), source="emit")


def _limiter(hc: HandlerConfig) -> asyncio.Semaphore | PriorityLimiter | None:
    """The handler's ``concurrency`` slots: by priority when it has one."""
    if not hc.concurrency:
        return None
    return PriorityLimiter(hc.concurrency) if hc.priority else asyncio.Semaphore(hc.concurrency)
