"""``${...}`` in the config's string values, and keeping what it produced out of errors.

* ``${VAR}`` the environment variable (an error when unset),
* ``${VAR:-default}`` with a default,
* ``${file:PATH}`` a file's content without its trailing newline,
* ``$${`` a literal ``${``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.config.yamlfile import format_path, line_of
from bridge.errors import ConfigIssue

_VAR = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


def scrub(issues: list[ConfigIssue], raw: Any, env: Mapping[str, str]) -> list[ConfigIssue]:
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
