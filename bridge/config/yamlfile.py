"""YAML with line numbers: the parsed file and the line of every path in it.

YAML 1.2 booleans only (``on:`` is a handler's key, not ``True``); alias cycles,
alias bombs and non-string keys are refused as ``ConfigError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from bridge.errors import ConfigError, ConfigIssue


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


def parse(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The document and the line of every path in it.

    Raises:
        ConfigError: the text is not YAML, or YAML that cannot be a config.
    """
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
