""" "Did you mean ...?" for an unknown key: the nearest known path of the whole config.

Known paths come from the config model's JSON Schema, with ``[]`` for an item of
a list and ``<name>`` for a key of a map (``connectors.<name>.consume.topics``).
The suggestion is, in this order: a sibling spelled nearly the same
(``handlers[0].retyr`` -> ``handlers[0].retry``), the same key elsewhere
(``logs`` -> ``telemetry.logs``), or a key spelled nearly the same elsewhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from bridge.config.yamlfile import format_path

ITEM = "[]"
NAME = "<name>"
Path = tuple[str, ...]


def known_paths(schema: dict[str, Any]) -> list[Path]:
    """Every key path the schema describes, parents before children."""
    defs: dict[str, Any] = schema.get("$defs", {})
    return list(dict.fromkeys(_walk(schema, (), defs, frozenset())))


def _walk(node: Any, path: Path, defs: dict[str, Any], seen: frozenset[str]) -> Iterator[Path]:
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name not in seen:
            yield from _walk(defs.get(name), path, defs, seen | {name})
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in node.get(key, []):
            yield from _walk(branch, path, defs, seen)
    for key, prop in node.get("properties", {}).items():
        yield (*path, key)
        yield from _walk(prop, (*path, key), defs, seen)
    yield from _walk(node.get("items"), (*path, ITEM), defs, seen)
    yield from _walk(node.get("additionalProperties"), (*path, NAME), defs, seen)


def suggestion(paths: list[Path], where: tuple[Any, ...]) -> str | None:
    """The nearest known path to the unknown key at ``where`` (its last part), as the
    user would write it, or None when nothing is near."""
    if not where:
        return None
    key, parent = str(where[-1]), where[:-1]
    # A key of another kind (a union) is known, but not here: never suggest itself.
    siblings = [
        p[-1]
        for p in paths
        if len(p) == len(parent) + 1 and _matches(p[:-1], parent) and p[-1] != key
    ]
    near = difflib.get_close_matches(key, siblings, n=1, cutoff=0.7)
    if near:
        return format_path((*parent, near[0]))
    elsewhere = [p for p in paths if p[-1] == key and not _matches(p, where)]
    if not elsewhere:
        names = {p[-1] for p in paths if p[-1] not in (ITEM, NAME)}
        near = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.75)
        elsewhere = [p for p in paths if near and p[-1] == near[0]]
    if not elsewhere:
        return None
    best = min(elsewhere, key=lambda p: (-_shared(p, parent), len(p)))
    shared = _shared(best, parent)  # shown with the user's own indices and names
    return format_path(parent[:shared]) + _show(best[shared:], after=shared > 0)


def _matches(pattern: Path, real: tuple[Any, ...]) -> bool:
    if len(pattern) != len(real):
        return False
    return all(
        (p == ITEM and isinstance(r, int)) or (p == NAME and isinstance(r, str)) or p == r
        for p, r in zip(pattern, real, strict=True)
    )


def _shared(pattern: Path, real: tuple[Any, ...]) -> int:
    """How many leading parts of ``real`` the pattern matches."""
    n = 0
    while n < min(len(pattern), len(real)) and _matches(pattern[n : n + 1], real[n : n + 1]):
        n += 1
    return n


def _show(path: Path, *, after: bool = False) -> str:
    out = ""
    for part in path:
        out += part if part == ITEM else (f".{part}" if out or after else part)
    return out
