"""The config file: YAML -> interpolation -> pydantic models, with errors that name path and line.

``load_config(path)`` returns a ``BridgeConfig`` or raises ``ConfigError`` with
every problem found, each with its YAML path (``handlers[2].retry.attempts``)
and line. Interpolation in string values:

* ``${VAR}`` the environment variable (an error when unset),
* ``${VAR:-default}`` with a default,
* ``${file:PATH}`` a file's content without its trailing newline,
* ``$${`` a literal ``${``.

The config file's directory is put on ``sys.path``, so ``function: handlers:send``
finds ``handlers.py`` next to the config.

Interpolation happens after parsing, so a value can never change the YAML's
structure. Connector and handler kinds come from ``connectors.KINDS`` and
``handlers.KINDS`` plus the entry-point groups ``bridge.connectors`` and
``bridge.handlers``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from bridge.duration import Duration
from bridge.errors import ConfigError, ConfigIssue
from bridge.handling import HandlerConfig, HandlerKind
from bridge.limits import RetryBudgetConfig
from bridge.retry import RetryPolicy
from bridge.transport import ConnectorConfig

_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


class TracesConfig(BaseModel):
    """OpenTelemetry traces. Unset fields fall back to the standard ``OTEL_*`` variables."""

    model_config = ConfigDict(extra="forbid")

    exporter: Literal["none", "console", "otlp"] | None = Field(
        None, description="Where spans go; default OTEL_TRACES_EXPORTER, else none (tracing off)."
    )
    protocol: Literal["http/protobuf", "grpc"] | None = Field(
        None, description="OTLP protocol; default OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf."
    )
    endpoint: str | None = Field(
        None, description="OTLP endpoint; default OTEL_EXPORTER_OTLP_ENDPOINT."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="OTLP headers (e.g. auth).")
    sample_ratio: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Parent-based ratio sampling; default OTEL_TRACES_SAMPLER.",
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


class Limits(BaseModel):
    """Input limits."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(
        1_048_576, ge=1, description="Larger messages are dead-lettered / 413."
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


# The concrete model; built by build_model() with the kinds known at run time.
class BridgeConfig(BridgeConfigBase):
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)
    handlers: list[HandlerConfig] = Field(default_factory=list)
    base_dir: Path = Field(default=Path("."), exclude=True)


# --------------------------------------------------------------------------- kinds


def connector_kinds() -> dict[str, Any]:
    """Built-in connector kinds plus those from the ``bridge.connectors`` entry points."""
    from connectors import KINDS

    return {**KINDS, **_plugins("bridge.connectors")}


def handler_kinds() -> dict[str, HandlerKind]:
    """Built-in handler kinds plus those from the ``bridge.handlers`` entry points."""
    from handlers import KINDS

    return {**KINDS, **_plugins("bridge.handlers")}


def _plugins(group: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=group):
        found[ep.name] = ep.load()
    return found


def _union(models: Sequence[type[BaseModel]]) -> Any:
    if len(models) == 1:
        return models[0]
    return Annotated[Union[tuple(models)], Field(discriminator="type")]  # noqa: UP007


@functools.cache
def config_model() -> type[BridgeConfig]:
    """The config model with every known connector and handler kind."""
    conn_models = [k.config for k in connector_kinds().values()]
    handler_models = [k.config for k in handler_kinds().values()]
    connectors: Any = dict[str, _union(conn_models)]  # type: ignore[misc]
    handlers: Any = list[_union(handler_models)]  # type: ignore[misc]
    model = create_model(
        "BridgeConfig",
        __base__=BridgeConfig,
        connectors=(connectors, Field(default_factory=dict)),
        handlers=(handlers, Field(default_factory=list)),
    )
    return model


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors."""
    schema = config_model().model_json_schema(by_alias=True)
    schema["properties"].pop("base_dir", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "fan-out bridge config"
    return schema


# --------------------------------------------------------------------------- YAML with lines


class _LineLoader(yaml.SafeLoader):
    """A safe loader with YAML 1.2 booleans: ``on``/``off``/``yes``/``no`` stay strings
    (``on:`` is a handler's key here, not ``True``)."""


_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_LineLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _parse(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        loader = _LineLoader(text)  # the reader refuses non-printable characters here
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", f"invalid YAML: {exc}")], source) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        lines: dict[tuple[Any, ...], int] = {}
        _index(node, (), lines)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigIssue("", f"invalid YAML: {problem}", line)], source) from None
    except (_Unusable, RecursionError) as exc:
        problem = str(exc) if isinstance(exc, _Unusable) else "nested too deeply"
        raise ConfigError([ConfigIssue("", f"invalid YAML: {problem}")], source) from None
    finally:
        loader.dispose()
    return data, lines


class _Unusable(Exception):
    """YAML that parses but cannot be a config: a cycle of aliases, an alias bomb."""


_MAX_NODES = 100_000


def _index(
    node: yaml.Node,
    path: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    ancestors: frozenset[int] = frozenset(),
    budget: list[int] | None = None,
) -> None:
    """Record the line of every path; refuse alias cycles and alias bombs (``_Unusable``)."""
    budget = budget if budget is not None else [_MAX_NODES]
    budget[0] -= 1
    if budget[0] < 0:
        raise _Unusable(f"more than {_MAX_NODES} values once aliases are expanded")
    if id(node) in ancestors:
        raise _Unusable(
            f"line {node.start_mark.line + 1}: an alias refers to a value containing it"
        )
    lines[path] = node.start_mark.line + 1
    inner = ancestors | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Unusable(f"line {key_node.start_mark.line + 1}: a key must be a string")
            key = key_node.value
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index(value_node, (*path, key), lines, inner, budget)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines, inner, budget)


def format_path(path: tuple[Any, ...]) -> str:
    """``("handlers", 2, "retry")`` -> ``handlers[2].retry``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def line_of(lines: Mapping[tuple[Any, ...], int], path: tuple[Any, ...]) -> int | None:
    """The line of ``path``, or of its closest ancestor that has one."""
    while True:
        if path in lines:
            return lines[path]
        if not path:
            return None
        path = path[:-1]


# --------------------------------------------------------------------------- interpolation


def interpolate(
    value: Any,
    env: Mapping[str, str],
    issues: list[ConfigIssue],
    lines: Mapping[tuple[Any, ...], int],
    path: tuple[Any, ...] = (),
) -> Any:
    """Replace ``${...}`` in every string of ``value``; problems are appended to ``issues``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, issues, lines, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, issues, lines, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(1):
            return "${" + match.group(2) + "}"
        expr = match.group(2)
        try:
            return _resolve(expr, env)
        except ValueError as exc:
            issues.append(ConfigIssue(format_path(path), str(exc), line_of(lines, path)))
            return ""

    return _VAR.sub(sub, value)


def _resolve(expr: str, env: Mapping[str, str]) -> str:
    if expr.startswith("file:"):
        file_path = Path(expr[5:]).expanduser()
        try:
            return file_path.read_text().rstrip("\n")
        except OSError as exc:
            raise ValueError(f"cannot read secret file {file_path}: {exc.strerror}") from None
    name, sep, default = expr.partition(":-")
    if not _ENV_NAME.match(name):
        raise ValueError(f"invalid variable reference ${{{expr}}}")
    if name in env:
        return env[name]
    if sep:
        return default
    raise ValueError(
        f"environment variable {name} is not set (use ${{{name}:-default}} for a default)"
    )


# --------------------------------------------------------------------------- loading


def _pydantic_issues(
    exc: ValidationError, data: Any, lines: Mapping[tuple[Any, ...], int]
) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        path = _real_path(err["loc"], data)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "literal_error":
            message = f"{message}, not {err.get('input')!r}"
        elif err["type"] == "union_tag_invalid":
            tag = (err.get("ctx") or {}).get("tag")
            expected = (err.get("ctx") or {}).get("expected_tags", "")
            message = f"unknown type {tag!r} (known: {expected})"
            path = (*path, "type")
        issues.append(ConfigIssue(format_path(path), message, line_of(lines, path)))
    return issues


def _real_path(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Drop the discriminator tags pydantic inserts in ``loc`` for tagged unions."""
    path: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        if isinstance(node, list) and isinstance(part, str):
            continue
        path.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(path)


def load_config(
    path: str | Path, env: Mapping[str, str] | None = None, *, check: bool = True
) -> BridgeConfig:
    """Read, interpolate and validate a config file.

    Args:
        path: the YAML file.
        env: variables for ``${VAR}``; default ``os.environ``.
        check: also run the cross-reference checks (connectors, schemas, filters).

    Raises:
        ConfigError: with every issue found, each with its path and line.
    """
    file = Path(path)
    _importable(file.parent)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue("", f"cannot read config: {exc.strerror}")], str(file)
        ) from None
    return load_config_text(text, env, source=str(file), base_dir=file.parent, check=check)


def _importable(directory: Path) -> None:
    """Handler and schema modules next to the config file import by their bare name."""
    import sys

    entry = str(directory.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)


def load_config_text(
    text: str,
    env: Mapping[str, str] | None = None,
    *,
    source: str = "<config>",
    base_dir: Path = Path("."),
    check: bool = True,
) -> BridgeConfig:
    """Like ``load_config`` for YAML text."""
    raw, lines = _parse(text, source)
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", "the config must be a mapping", 1)], source)
    issues: list[ConfigIssue] = []
    env = os.environ if env is None else env
    data = interpolate(raw, env, issues, lines)
    try:
        cfg = config_model().model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        # A value left empty by a failed ${...} would only repeat that error.
        known = {i.path for i in issues}
        issues.extend(i for i in _pydantic_issues(exc, data, lines) if i.path not in known)
        raise ConfigError(_scrub(issues, raw, env), source) from None
    if issues:
        raise ConfigError(issues, source)
    if check:
        from bridge.checks import cross_check

        issues = [
            ConfigIssue(format_path(p), msg, line_of(lines, p)) for p, msg in cross_check(cfg)
        ]
        if issues:
            raise ConfigError(_scrub(issues, raw, env), source)
    return cfg


def _scrub(issues: list[ConfigIssue], raw: Any, env: Mapping[str, str]) -> list[ConfigIssue]:
    """Issues whose messages never repeat a value that came from ``${...}`` (a secret,
    for all we know): each is shown as ``***``."""
    values: set[str] = set()
    stack = [raw]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and "${" in node:
            for match in _VAR.finditer(node):
                if not match.group(1):
                    with contextlib.suppress(ValueError):
                        values.add(_resolve(match.group(2), env))
    hidden = sorted((v for v in values if len(v) >= 4), key=len, reverse=True)
    if not hidden:
        return issues
    out = []
    for issue in issues:
        message = issue.message
        for value in hidden:
            message = message.replace(value, "***")
        out.append(ConfigIssue(issue.path, message, issue.line))
    return out
