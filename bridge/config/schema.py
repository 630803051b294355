"""The JSON Schema of the config file: what the loader accepts, for editors and CI.

The models' schema is widened where the loader reads more than a model's type
says: ``${...}`` interpolation happens before validation, so any number, boolean
or choice may also be written as a string holding ``${VAR}``; durations and
one-or-many lists carry their own widened schema (``bridge.duration``,
``bridge.handling.EventTypes``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from bridge.config.kinds import Kinds, config_model

INTERPOLATED: dict[str, Any] = {
    "type": "string",
    "pattern": r"\$\{[^}]*\}",
    "description": "Interpolated when the file loads: `${VAR}`, `${VAR:-default}`, "
    "`${secret:VAR}` (masked in errors), `${file:PATH}`.",
}
"""A string with ``${...}``: the loader replaces it before the value is validated."""

# Keys that describe a value rather than constrain it: they stay on the widened node.
_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated")


def json_schema(kinds: Kinds) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the config file with every kind of ``kinds``.

    Deterministic for the same kinds: the same models give the same text.
    """
    schema = config_model(kinds).model_json_schema(by_alias=True)
    schema["properties"].pop("base_dir", None)
    schema = _widen(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "fan-out bridge config",
        **{k: v for k, v in schema.items() if k not in ("$schema", "title")},
    }


def schema_text(schema: dict[str, Any]) -> str:
    """The schema as ``bridge schema`` prints it: two-space JSON, keys in model order."""
    return json.dumps(schema, indent=2) + "\n"


def _widen(node: Any) -> Any:
    """``node`` with every number, boolean and choice also accepting ``${...}``."""
    if isinstance(node, list):
        return [_widen(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _widen(value) if key != "default" else value for key, value in node.items()}
    if out.get("type") in ("number", "integer", "boolean") or isinstance(out.get("enum"), list):
        kept = {k: out.pop(k) for k in _ANNOTATIONS if k in out}
        return {"anyOf": [out, copy.deepcopy(INTERPOLATED)], **kept}
    if isinstance(out.get("anyOf"), list):
        out["anyOf"] = _flat(out["anyOf"])
    return out


def _flat(branches: list[Any]) -> list[Any]:
    """Branches with nested bare ``anyOf`` lifted and ``INTERPOLATED`` kept once, last
    but before ``null`` (``int | None`` reads ``integer | ${...} | null``)."""
    flat: list[Any] = []
    for branch in branches:
        nested = branch.get("anyOf") if isinstance(branch, dict) and len(branch) == 1 else None
        flat.extend(nested if isinstance(nested, list) else [branch])
    rest = [b for b in flat if b != INTERPOLATED and b != {"type": "null"}]
    if len(rest) < len(flat) - flat.count({"type": "null"}):
        rest.append(copy.deepcopy(INTERPOLATED))
    return rest + [{"type": "null"}] * ({"type": "null"} in flat)
