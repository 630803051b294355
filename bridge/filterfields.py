"""The ``event.data`` fields a CEL filter reads, checked against the event's JSON Schema.

A filter that reads a field the event never has does not fail: by contract it
is "no match", so a typo (``event.data.sorce``) would make the handler silently
never run. Config loading therefore checks every ``event.data.a.b`` of a filter
against the schema of each event type the handler subscribes to.

The rule: a field is undeclared when the object holding it lists its
``properties`` and neither declares it nor opens itself to more
(``additionalProperties`` / ``patternProperties``; a pydantic model with
``extra="allow"`` does). Where the schema cannot tell (no schema, ``Any``, a
map, an array), nothing is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_STRING = re.compile(
    r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\''
)
_REFERENCE = re.compile(r"(?<![\w.])event\s*\.\s*data((?:\s*\.\s*[A-Za-z_]\w*)+)(\s*\()?")
_SEGMENT = re.compile(r"[A-Za-z_]\w*")


def data_paths(expression: str) -> list[tuple[str, ...]]:
    """The field paths under ``event.data`` that ``expression`` reads, in order.

    ``event.data.name.startsWith('a')`` reads ``("name",)``: a segment followed by
    ``(`` is a method. String literals are ignored.
    """
    code = _STRING.sub('""', expression)
    found: list[tuple[str, ...]] = []
    for match in _REFERENCE.finditer(code):
        segments = tuple(_SEGMENT.findall(match.group(1)))
        if match.group(2):
            segments = segments[:-1]
        if segments and segments not in found:
            found.append(segments)
    return found


def undeclared(schema: dict[str, Any], path: tuple[str, ...]) -> tuple[int, list[str]] | None:
    """Where ``path`` leaves the schema: the index of the first undeclared field and
    the fields declared there; None when the schema declares the path (or cannot tell)."""
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    nodes = [schema]
    for index, name in enumerate(path):
        declared: list[str] = []
        inner: list[dict[str, Any]] = []
        for node in _branches(nodes, defs):
            props = node.get("properties")
            extra = node.get("additionalProperties")
            if not isinstance(props, dict) or node.get("patternProperties") or extra is True:
                return None  # an object without a field list, or one open to more
            if name in props:
                inner.append(props[name])
            elif isinstance(extra, dict) and extra:
                inner.append(extra)
            declared.extend(props)
        if not inner:
            return index, list(dict.fromkeys(declared))
        nodes = inner
    return None


def _branches(nodes: list[Any], defs: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The object schemas ``nodes`` may be: ``$ref`` resolved, unions flattened,
    ``null`` and other non-objects left out."""
    stack = list(nodes)
    seen: set[str] = set()
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                stack.append(defs.get(name))
            continue
        unions = [b for key in ("anyOf", "oneOf", "allOf") for b in node.get(key, [])]
        if unions:
            stack.extend(unions)
            continue
        if node.get("type") in ("null", "string", "number", "integer", "boolean", "array"):
            continue
        yield node
