"""What the engine is told (``DispatchConfig``) and what it works with (``DispatchEnv``)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from bridge.clock import Clock, RealClock
from bridge.dispatch.runs import Emitter
from bridge.history import HistoryRecorder
from bridge.metrics import Metrics
from bridge.store.contracts import Store
from bridge.tracing import Tracing
from bridge.transport import Publisher

if TYPE_CHECKING:
    from bridge.config import BridgeConfig


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    """The dispatch part of the bridge config.

    Args:
        ledger: consult and write the ledger (off: every delivery runs every handler).
        unrouted: ``dead_letter`` or ``drop`` events with an unknown type or no handler.
        max_fanout: most child events one attempt may emit.
        inline_limits: per connector, the longest retry delay waited inline; longer
            retries are parked. ``default_inline_limit`` for the rest.
        completions: event type (or glob) -> type of its ``on_complete`` event.
    """

    ledger: bool = True
    unrouted: Literal["dead_letter", "drop"] = "dead_letter"
    max_fanout: int = 10_000
    inline_limits: Mapping[str, float] = field(default_factory=dict)
    default_inline_limit: float = 30.0
    completions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: BridgeConfig) -> DispatchConfig:
        """The dispatch settings of a validated bridge config."""
        return cls(
            ledger=cfg.ledger,
            unrouted=cfg.unrouted,
            max_fanout=cfg.max_fanout,
            inline_limits={
                name: conn.consume.inline_retry_limit
                for name, conn in cfg.connectors.items()
                if conn.consume is not None and conn.consume.inline_retry_limit is not None
            },
            default_inline_limit=cfg.defaults.inline_retry_limit,
            completions={t: s.on_complete for t, s in cfg.events.items() if s.on_complete},
        )

    def inline_limit(self, connector: str) -> float:
        """The longest retry delay waited inline for a delivery from ``connector``."""
        return self.inline_limits.get(connector, self.default_inline_limit)


@dataclass(slots=True, eq=False)
class DispatchEnv:
    """The collaborators every part of the engine shares.

    One instance is shared by the dispatcher and its parts, so a field set on it
    (``emitter``, ``wall``) is seen by all of them at once.

    Args:
        store: ledger, dead letters and parked retries.
        metrics: counters and histograms.
        clock: time for retries; tests pass one that does not really sleep.
        tracing: spans for deliveries and attempts; None, or one not enabled, means none.
        history: records events and runs for the developer UI.
        emitter: sends events emitted by handlers (durably) before their run is recorded.
        publishers: for handlers' ``dead_letter`` targets, by connector name.
        wall: wall-clock time (epoch seconds), for parked retries' due times.
        rng: the jitter of retry delays.
    """

    store: Store
    metrics: Metrics = field(default_factory=Metrics)
    clock: Clock = field(default_factory=RealClock)
    tracing: Tracing | None = None
    history: HistoryRecorder | None = None
    emitter: Emitter | None = None
    publishers: Mapping[str, Publisher] = field(default_factory=dict)
    wall: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.tracing is not None and not self.tracing.enabled:
            self.tracing = None
