"""What the HTTP face (``bridge.server``, ``bridge.ui``) needs of a running bridge.

The runtime that builds and supervises the bridge lives in the wiring
(``bridge.app.runtime``); the server sees it only through ``RunningBridge``, so
the engine never imports the wiring.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bridge.config.models import BridgeConfig
    from bridge.events import EventCatalog
    from bridge.history import HistoryRecorder
    from bridge.inbox import Inbox
    from bridge.metrics import Metrics
    from bridge.store.contracts import Store
    from bridge.transport import ConnectorStatus, Ingress


class RunningBridge(Protocol):
    """A built bridge, as its server reads it. Every member is read-only here."""

    @property
    def cfg(self) -> BridgeConfig:
        """The validated config."""

    @property
    def store(self) -> Store:
        """The state store (dead letters, history, ping)."""

    @property
    def inbox(self) -> Inbox:
        """Where accepted events are committed; ``inbox.wakeup`` wakes its consumer."""

    @property
    def history(self) -> HistoryRecorder | None:
        """The run history's recorder (its ``feed`` tells live pages what changed); None when off."""

    @property
    def catalog(self) -> EventCatalog:
        """The event catalog, to validate events before accepting them."""

    @property
    def metrics(self) -> Metrics:
        """The metrics registry that ``/metrics`` renders."""

    @property
    def handlers(self) -> Mapping[str, object]:
        """The built handlers by id (a replay names one)."""

    @property
    def ingresses(self) -> Mapping[str, Ingress]:
        """Connectors fed over this server, whose routes it mounts."""

    @property
    def loop_lag(self) -> float:
        """Seconds the event loop last woke late; ``/healthz`` fails past a limit."""

    @property
    def ready(self) -> bool:
        """The bridge running, and every source that ``readiness.connectors`` names connected."""

    def statuses(self) -> Mapping[str, ConnectorStatus]:
        """Each source's health and backlog, by connector name."""
