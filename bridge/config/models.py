"""The config file's models: every section but the connectors and handlers.

``BridgeConfig`` names the connectors and handlers by their base models; the
model that validates a file, with one discriminated union per registry of
kinds, is built by ``bridge.config.kinds.config_model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.duration import Duration
from bridge.handling import HandlerConfig
from bridge.limits import RetryBudgetConfig
from bridge.retry import RetryPolicy
from bridge.tracing import TracesConfig
from bridge.transport import ConnectorConfig


class EventTypeSpec(BaseModel):
    """One entry of the event catalog."""

    model_config = ConfigDict(extra="forbid")

    schema_: str = Field(
        "none",
        alias="schema",
        description="`none`, a pydantic model `package.module:Model`, or a JSON Schema file path.",
    )
    description: str | None = None
    on_complete: str | None = Field(
        None,
        description="When every run of an event of this type is final, emit an event of this "
        "type listing each branch's outcome (succeeded with its result, or dead-lettered with "
        "its error).",
    )


class ApiConfig(BaseModel):
    """The event API on the bridge's server (``POST /v1/events``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Accept events over HTTP.")
    token: str | None = Field(None, description="Require `Authorization: Bearer <token>`.")
    max_in_flight: int = Field(1000, ge=1, description="Inbox events processed at once.")


class AdminConfig(BaseModel):
    """Who may use the admin endpoints: ``/v1/dead-letters...``, the developer UI
    (``/ui``, ``/ui/api``) and, with ``metrics: true``, ``/metrics``."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(
        None,
        description="Require `Authorization: Bearer <token>`. Default: the event API's "
        "token (`server.api.token`), if set.",
    )
    local_only: bool = Field(
        False,
        description="Refuse (403) clients whose address is not loopback (127.0.0.0/8, ::1). "
        "The socket's peer address counts, not X-Forwarded-For.",
    )
    metrics: bool = Field(False, description="Protect /metrics the same way.")


class UiConfig(BaseModel):
    """The developer UI at ``/ui`` (events, fan-out trees, dead letters, a send form)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="Serve the UI and its JSON API (`/ui`, `/ui/api`); off by default."
    )


class ServerConfig(BaseModel):
    """The bridge's HTTP server: health, event API, webhooks, admin."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    listen: str = Field("127.0.0.1:8787", description="host:port to listen on.")
    api: ApiConfig = Field(default_factory=ApiConfig)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    ui: UiConfig = Field(default_factory=UiConfig)
    body_timeout: Duration = Field(
        30.0,
        gt=0,
        description="A request body must arrive in full within this; else 408 and the "
        "connection is closed.",
    )
    idle_timeout: Duration = Field(
        75.0,
        gt=0,
        description="A connection that sends no complete request within this is closed "
        "(idle keep-alive, or headers that never finish).",
    )
    wedged_after: Duration = Field(
        10.0, description="/healthz fails when the event loop lags more than this."
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("listen must be host:port, e.g. 127.0.0.1:8787")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class LogConfig(BaseModel):
    """Log output."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["json", "console"] = Field("json", description="JSON lines, or readable text.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    levels: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR"]] = Field(
        default_factory=dict, description="Level per logger name, e.g. `aiokafka: WARNING`."
    )


class MetricsConfig(BaseModel):
    """Metrics: Prometheus text on /metrics."""

    model_config = ConfigDict(extra="forbid")

    prometheus: bool = Field(True, description="Serve /metrics in the Prometheus text format.")


class TelemetryConfig(BaseModel):
    """Logs, traces and metrics."""

    model_config = ConfigDict(extra="forbid")

    service_name: str = "bridge"
    logs: LogConfig = Field(default_factory=LogConfig)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


class Defaults(BaseModel):
    """Defaults for handlers that do not set their own."""

    model_config = ConfigDict(extra="forbid")

    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: Duration = Field(30.0, description="Per-attempt timeout.")
    inline_retry_limit: Duration = Field(
        30.0,
        description="A retry whose delay is longer than this is parked in the store and the "
        "source message settled; the scheduler runs it when due. A connector's "
        "`consume.inline_retry_limit` overrides it.",
    )


class HistoryConfig(BaseModel):
    """Run history: every event with its runs and attempts, for the developer UI."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(
        None, description="Record the history; default: on when the UI is on."
    )
    max_age: Duration = Field(7 * 86_400.0, description="Forget events older than this.")
    max_events: int = Field(10_000, ge=1, description="Keep at most this many events.")
    max_pending: int = Field(
        5_000,
        ge=1,
        description="Most events (with their runs) waiting in memory to be written; when "
        "full, the oldest is left out of the history and counted in "
        "`bridge_history_dropped_total` (deliveries are never held up).",
    )


class Limits(BaseModel):
    """Input limits."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        1_048_576, ge=1, description="Larger messages are dead-lettered / 413."
    )
    poison_limit: int = Field(
        5,
        ge=1,
        description="How many times one delivery is tried when the engine itself fails on it "
        "(an internal error, not a handler's failure: those follow the handler's `retry`). The "
        "tries are spaced 0.5 s, 1 s, 2 s ... (at most 10 s); after the last one the message is "
        "dead-lettered with reason `internal_error` and its traceback, counted in "
        "`bridge_internal_errors_total`, and acked, so it never blocks its source.",
    )


class BridgeConfigBase(BaseModel):
    """The top level of the config file (connectors and handlers added per kind registry)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="Config format version.")
    store: str = Field(
        "sqlite:///.bridge/state.db",
        description="State store URL: sqlite:///PATH, memory://, or postgresql://...",
    )

    @field_validator("store")
    @classmethod
    def _store_scheme(cls, value: str) -> str:
        scheme = value.partition(":")[0]
        if scheme not in ("sqlite", "memory", "postgresql", "postgres"):
            # The URL itself is not echoed: it may hold a password.
            raise ValueError(
                f"unsupported store URL scheme {scheme!r} (sqlite:///PATH, memory://, "
                "postgresql://...)"
            )
        return value

    server: ServerConfig = Field(default_factory=ServerConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    limits: Limits = Field(default_factory=Limits)
    defaults: Defaults = Field(default_factory=Defaults)
    retry_budgets: dict[str, RetryBudgetConfig] = Field(
        default_factory=dict,
        description="Retry budgets by name, shared by the handlers whose `retry_budget` names them.",
    )
    history: HistoryConfig = Field(default_factory=HistoryConfig)
    max_fanout: int = Field(
        10_000, ge=1, description="Most child events one handler attempt may emit (`ctx.emit`)."
    )
    drain_timeout: Duration = Field(
        25.0, description="On SIGTERM, how long in-flight runs may take to finish."
    )
    ledger: bool = Field(
        True,
        description="Record succeeded runs so a redelivered event re-runs only unfinished branches.",
    )
    unrouted: Literal["dead_letter", "drop"] = Field(
        "dead_letter",
        description="What to do with an event whose type is unknown or that no handler matches.",
    )
    events: dict[str, EventTypeSpec] = Field(
        default_factory=dict, description="The event catalog: type name or glob -> schema."
    )


# No docstring: it would become the schema's description. The model that validates a file
# is built from this one by bridge.config.kinds.config_model, per registry of kinds.
class BridgeConfig(BridgeConfigBase):
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    handlers: list[HandlerConfig] = Field(default_factory=list)
    base_dir: Path = Field(default=Path("."), exclude=True)
