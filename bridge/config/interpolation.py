"""``${...}`` in the config's string values, and keeping what it produced out of errors.

* ``${VAR}`` the environment variable (an error when unset),
* ``${VAR:-default}`` with a default,
* ``${secret:NAME}`` (or ``${secret:NAME:-default}``) the environment variable,
  marked as a secret: its value never appears in an error,
* ``${file:PATH}`` a file's content without its trailing newline,
* ``$${`` a literal ``${``.

What errors mask is decided in ``bridge.redaction``: values of secret-bearing
keys, ``${secret:...}`` and ``${file:...}`` values, variables named like secrets
(``API_TOKEN``), URL passwords. Other values (``${PORT}``) are shown as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.config.yamlfile import format_path, line_of
from bridge.errors import ConfigIssue
from bridge.redaction import Masker, is_secret_env, is_secret_key, url_password

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
    name, sep, default = expr.removeprefix("secret:").partition(":-")
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
    """Issues whose messages never repeat a secret of the file (``bridge.redaction``):
    each is shown as ``***``, a URL's password as ``user:***@``."""
    mask = Masker(_secrets(raw, env, secret_key=False))
    return [ConfigIssue(issue.path, mask(issue.message), issue.line) for issue in issues]


def _secrets(node: Any, env: Mapping[str, str], *, secret_key: bool) -> list[str]:
    """The secret values of ``node`` (the file before interpolation)."""
    if isinstance(node, dict):
        return [
            value
            for key, child in node.items()
            for value in _secrets(child, env, secret_key=secret_key or _secret_key(node, key))
        ]
    if isinstance(node, list):
        return [value for child in node for value in _secrets(child, env, secret_key=secret_key)]
    if not isinstance(node, str):
        return [str(node)] if secret_key and node is not None else []
    found = []
    for match in _VAR.finditer(node):
        expr = match.group(2)
        if match.group(1) or not _marked(expr):
            continue
        try:
            found.append(_resolve(expr, env))
        except ValueError:
            continue
    value = interpolate(node, env, [], {})
    if secret_key:
        found.append(value)
    password = url_password(value)
    if password is not None:
        found.append(password)
    return found


def _secret_key(mapping: dict[Any, Any], key: Any) -> bool:
    """A secret-bearing key, or the ``value`` of an auth header (``auth: {header, value}``)."""
    return is_secret_key(str(key)) or (key == "value" and "header" in mapping)


def _marked(expr: str) -> bool:
    """Whether ``${expr}`` is a secret by its form: ``secret:``, ``file:``, or its name."""
    return expr.startswith(("secret:", "file:")) or is_secret_env(expr.partition(":-")[0])
