"""The config file with this process's kinds (``default_kinds()``): what the CLI,
dev mode, tests and benchmarks load configs with."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.app.kinds import default_kinds
from bridge.config import BridgeConfig, kinds, loading, schema
from bridge.errors import ConfigError


def load_config(
    path: str | Path, env: Mapping[str, str] | None = None, *, check: bool = True
) -> BridgeConfig:
    """``bridge.config.load_config`` with the default kinds.

    Raises:
        ConfigError: with every issue found, each with its path and line.
    """
    return loading.load_config(path, default_kinds(), env, check=check)


def load_config_text(
    text: str,
    env: Mapping[str, str] | None = None,
    *,
    source: str = "<config>",
    base_dir: Path = Path("."),
    check: bool = True,
) -> BridgeConfig:
    """``bridge.config.load_config_text`` with the default kinds.

    Raises:
        ConfigError: with every issue found, each with its path and line.
    """
    return loading.load_config_text(
        text, default_kinds(), env, source=source, base_dir=base_dir, check=check
    )


def config_model() -> type[BridgeConfig]:
    """The config model with the default kinds."""
    return kinds.config_model(default_kinds())


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file with the default kinds (``bridge schema``)."""
    return schema.json_schema(default_kinds())


def config_error_lines(exc: ConfigError) -> list[str]:
    """Each issue of ``exc`` as ``file:line: path: message``, then a count."""
    lines = []
    for issue in exc.issues:
        where = f"{exc.source}:{issue.line}" if issue.line is not None else f"{exc.source}"
        lines.append(f"{where}: {issue.path or '<root>'}: {issue.message}")
    count = len(exc.issues)
    return [*lines, f"{count} error{'s' if count != 1 else ''} in {exc.source}"]


def print_config_error(exc: ConfigError) -> None:
    """Print each issue of ``exc`` as ``file:line: path: message`` to stderr, then a count."""
    for line in config_error_lines(exc):
        print(line, file=sys.stderr)
