"""Reading a config file: YAML -> interpolation -> the kinds' model -> cross checks."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bridge.checks import cross_check
from bridge.config.interpolation import interpolate, scrub
from bridge.config.kinds import Kinds, config_model
from bridge.config.models import BridgeConfig
from bridge.config.suggest import known_paths, suggestion
from bridge.config.yamlfile import format_path, line_of, parse
from bridge.errors import ConfigError, ConfigIssue


def pydantic_issues(
    exc: ValidationError,
    data: Any,
    lines: Mapping[tuple[Any, ...], int],
    schema: Callable[[], dict[str, Any]],
) -> list[ConfigIssue]:
    """``exc``'s errors as issues with the YAML path and line of each; an unknown key
    suggests the nearest path that ``schema()`` (the JSON Schema, made only then) knows."""
    issues = []
    paths: list[tuple[str, ...]] = []
    for err in exc.errors(include_url=False):
        path = _real_path(err["loc"], data)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            paths = paths or known_paths(schema())
            near = suggestion(paths, path)
            message = f"unknown key; did you mean `{near}`?" if near else "unknown key"
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
        if node is not None and not isinstance(node, dict | list):
            continue  # past a value: the rest names union branches (`ExpectRun`, `literal[...]`)
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
    path: str | Path,
    kinds: Kinds,
    env: Mapping[str, str] | None = None,
    *,
    check: bool = True,
) -> BridgeConfig:
    """Read, interpolate and validate a config file.

    The config file's directory is put on ``sys.path``, so ``function: handlers:send``
    finds ``handlers.py`` next to the config.

    Args:
        path: the YAML file.
        kinds: the connector and handler kinds the file may use.
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
    return load_config_text(text, kinds, env, source=str(file), base_dir=file.parent, check=check)


def _importable(directory: Path) -> None:
    """Handler and schema modules next to the config file import by their bare name."""
    entry = str(directory.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)


def load_config_text(
    text: str,
    kinds: Kinds,
    env: Mapping[str, str] | None = None,
    *,
    source: str = "<config>",
    base_dir: Path = Path("."),
    check: bool = True,
) -> BridgeConfig:
    """Like ``load_config`` for YAML text."""
    raw, lines = parse(text, source)
    if not isinstance(raw, dict):
        raise ConfigError([ConfigIssue("", "the config must be a mapping", 1)], source)
    issues: list[ConfigIssue] = []
    env = os.environ if env is None else env
    data = interpolate(raw, env, issues, lines)
    model = config_model(kinds)
    try:
        cfg = model.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        # A value left empty by a failed ${...} would only repeat that error.
        known = {i.path for i in issues}
        issues.extend(
            i
            for i in pydantic_issues(
                exc, data, lines, lambda: model.model_json_schema(by_alias=True)
            )
            if i.path not in known
        )
        raise ConfigError(scrub(issues, raw, env), source) from None
    if issues:
        raise ConfigError(issues, source)
    if check:
        issues = [
            ConfigIssue(format_path(p), msg, line_of(lines, p))
            for p, msg in cross_check(cfg, kinds.connectors)
        ]
        if issues:
            raise ConfigError(scrub(issues, raw, env), source)
    return cfg
