"""The config file: YAML -> interpolation -> pydantic models, with errors that name path and line.

``load_config(path, kinds)`` returns a ``BridgeConfig`` or raises ``ConfigError``
with every problem found, each with its YAML path (``handlers[2].retry.attempts``)
and line. Interpolation happens after parsing, so a value can never change the
YAML's structure (see ``bridge.config.interpolation``).

The parts:

* ``models``: every section of the file but the connectors and handlers,
* ``yamlfile``: YAML with the line of every path,
* ``interpolation``: ``${VAR}``, ``${VAR:-default}``, ``${file:PATH}``,
* ``kinds``: ``Kinds``, the registries of connector and handler kinds, and the
  config model they make,
* ``schema``: that model's JSON Schema, widened to what the loader accepts,
* ``loading``: ``load_config`` and ``load_config_text``.

The engine takes the kinds as a value; the wiring (``bridge.app``) supplies the
built-ins plus the entry-point plug-ins and offers ``load_config(path)`` with them.
"""

from __future__ import annotations

from bridge.config.interpolation import interpolate
from bridge.config.kinds import Kinds, config_model
from bridge.config.loading import load_config, load_config_text
from bridge.config.models import (
    AdminConfig,
    ApiConfig,
    BridgeConfig,
    BridgeConfigBase,
    Defaults,
    EventTypeSpec,
    HistoryConfig,
    Limits,
    LogConfig,
    MetricsConfig,
    ServerConfig,
    TelemetryConfig,
    UiConfig,
)
from bridge.config.schema import json_schema
from bridge.config.yamlfile import format_path, line_of
from bridge.tracing import TracesConfig

__all__ = [
    "AdminConfig",
    "ApiConfig",
    "BridgeConfig",
    "BridgeConfigBase",
    "Defaults",
    "EventTypeSpec",
    "HistoryConfig",
    "Kinds",
    "Limits",
    "LogConfig",
    "MetricsConfig",
    "ServerConfig",
    "TelemetryConfig",
    "TracesConfig",
    "UiConfig",
    "config_model",
    "format_path",
    "interpolate",
    "json_schema",
    "line_of",
    "load_config",
    "load_config_text",
]
