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
    description: str | None = Field(
        None, description="What events of this type mean (shown in the developer UI's catalog)."
    )
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


def listen_address(value: str) -> str:
    """Check a ``host:port`` to listen on (``server.listen``, ``--listen``); returns it.

    Raises:
        ValueError: not ``host:port``, or the port is not a number in 0-65535.
    """
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not host:port, e.g. 127.0.0.1:8787")
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"port {port!r} of {value!r} is not a number in 0-65535")
    return value


class ServerConfig(BaseModel):
    """The bridge's HTTP server: health, event API, webhooks, admin."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="Run the HTTP server (health, metrics, event API, webhooks, admin); "
        "webhook connectors need it.",
    )
    listen: str = Field(
        "127.0.0.1:8787",
        description="host:port to listen on.",
        examples=["127.0.0.1:8787", "0.0.0.0:8787", "[::1]:8787"],
    )
    api: ApiConfig = Field(
        default_factory=ApiConfig, description="The event API, `POST /v1/events`."
    )
    admin: AdminConfig = Field(
        default_factory=AdminConfig,
        description="Who may use the dead-letter endpoints, the UI and, optionally, /metrics.",
    )
    ui: UiConfig = Field(default_factory=UiConfig, description="The developer UI at `/ui`.")
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
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the server answers besides loopback names (localhost), IP "
        "literals and the `listen` host; any other `Host` header is refused (403), which "
        "stops DNS rebinding. A name, `.example.com` for that domain and its subdomains, or "
        "`*` for any. /healthz, /readyz and /metrics answer any Host.",
        examples=[["bridge", ".svc.cluster.local", "bridge.example.com"]],
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return listen_address(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        names = [v.strip().lower() for v in value]
        for name in names:
            if not name or any(ch in name for ch in "/: @"):
                raise ValueError(
                    f"{name!r} is not a host name: write the name alone (no scheme, no port)"
                )
        return names

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
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Least severe level logged, for every logger not in `levels`."
    )
    levels: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR"]] = Field(
        default_factory=dict, description="Level per logger name, e.g. `aiokafka: WARNING`."
    )


class OtlpMetricsConfig(BaseModel):
    """Push the same metrics over OTLP/HTTP (protobuf) through the OpenTelemetry SDK."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = Field(
        None,
        description="OTLP/HTTP metrics URL, e.g. `http://collector:4318/v1/metrics`; default "
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT + `/v1/metrics`.",
    )
    interval: Duration = Field(60.0, gt=0, description="How often the metrics are pushed.")
    headers: dict[str, str] = Field(default_factory=dict, description="OTLP headers (e.g. auth).")


class MetricsConfig(BaseModel):
    """Metrics: Prometheus text on /metrics, and optionally pushed over OTLP."""

    model_config = ConfigDict(extra="forbid")

    prometheus: bool = Field(True, description="Serve /metrics in the Prometheus text format.")
    otlp: OtlpMetricsConfig | None = Field(
        None, description="Also push the metrics over OTLP/HTTP (off unless set)."
    )


class TelemetryConfig(BaseModel):
    """Logs, traces and metrics."""

    model_config = ConfigDict(extra="forbid")

    service_name: str = Field(
        "bridge", description="`service.name` of traces and metrics (OpenTelemetry resource)."
    )
    logs: LogConfig = Field(default_factory=LogConfig, description="Log format and levels.")
    traces: TracesConfig = Field(
        default_factory=TracesConfig, description="OpenTelemetry traces: exporter and sampling."
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="Metrics: the Prometheus endpoint."
    )


class Defaults(BaseModel):
    """Defaults for handlers that do not set their own."""

    model_config = ConfigDict(extra="forbid")

    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="Retry policy of every handler that sets no `retry` of its own.",
    )
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


class ReadinessConfig(BaseModel):
    """What ``/readyz`` waits for besides the store and a running bridge."""

    model_config = ConfigDict(extra="forbid")

    connectors: Literal["all", "none"] | list[str] = Field(
        "all",
        description="Connectors whose health makes /readyz fail: `all`, `none`, or a list of "
        "connector names. The others still show in /readyz details and in metrics. `none` "
        "suits a sidecar, whose pod should not leave its Services when a broker is down.",
        examples=["none", ["orders"]],
    )


class BridgeConfigBase(BaseModel):
    """The top level of the config file (connectors and handlers added per kind registry)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(1, description="Config format version.")
    store: str = Field(
        "sqlite:///.bridge/state.db",
        description="State store URL: sqlite:///PATH, memory://, or postgresql://...",
        examples=[
            "sqlite:///.bridge/state.db",
            "memory://",
            "postgresql://bridge:${PGPASSWORD}@db:5432/bridge",
        ],
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

    server: ServerConfig = Field(
        default_factory=ServerConfig,
        description="The HTTP server: health, metrics, event API, webhooks, admin, UI.",
    )
    readiness: ReadinessConfig = Field(
        default_factory=ReadinessConfig,
        description="What /readyz waits for: the store always, and the connectors named here.",
    )
    telemetry: TelemetryConfig = Field(
        default_factory=TelemetryConfig,
        description="Logs (format, levels), traces (OpenTelemetry) and metrics (Prometheus).",
    )
    limits: Limits = Field(
        default_factory=Limits, description="Input limits: body size, poison deliveries."
    )
    defaults: Defaults = Field(
        default_factory=Defaults,
        description="Retry policy, timeout and inline retry limit of handlers that set none.",
    )
    retry_budgets: dict[str, RetryBudgetConfig] = Field(
        default_factory=dict,
        description="Retry budgets by name, shared by the handlers whose `retry_budget` names them.",
    )
    history: HistoryConfig = Field(
        default_factory=HistoryConfig,
        description="Run history for the developer UI: events, runs and attempts.",
    )
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


CONNECTORS_DESCRIPTION = (
    "Connectors by name: where events come from (`consume`) and where `publish` handlers "
    "and dead-letter copies go; one kind per `type`."
)
HANDLERS_DESCRIPTION = (
    "Handlers: each runs on the events its `on` (and `filter`) selects, independently of "
    "the others, with its own retries; one kind per `type`."
)


# No docstring: it would become the schema's description. The model that validates a file
# is built from this one by bridge.config.kinds.config_model, per registry of kinds.
class BridgeConfig(BridgeConfigBase):
    connectors: dict[str, ConnectorConfig] = Field(
        default_factory=dict, description=CONNECTORS_DESCRIPTION
    )
    handlers: list[HandlerConfig] = Field(default_factory=list, description=HANDLERS_DESCRIPTION)
    base_dir: Path = Field(default=Path("."), exclude=True)
