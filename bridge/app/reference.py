"""The shipped schema file and the config reference, both generated from the config models.

``python -m bridge.app.reference`` (or ``make schema``) writes
``schema/bridge.schema.json`` (what ``bridge schema`` prints with the built-in
kinds) and ``docs/config.md`` (every key by its dotted path, with its type,
default and description; connectors and handlers per kind). Tests fail when
either is stale, naming this command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import connectors
import handlers
from bridge.config import Kinds, json_schema
from bridge.config.schema import INTERPOLATED, schema_text
from bridge.duration import DURATION_PATTERN
from bridge.handling import HandlerConfig

REGENERATE = "make schema  (or: .venv/bin/python -m bridge.app.reference)"
"""The one command that rewrites both generated files."""

SCHEMA_FILE = Path("schema/bridge.schema.json")
REFERENCE_FILE = Path("docs/config.md")


def builtin_schema() -> dict[str, Any]:
    """The config file's JSON Schema with the built-in kinds only (no plug-ins), so the
    shipped file does not depend on what happens to be installed."""
    return json_schema(Kinds(connectors=connectors.KINDS, handlers=handlers.KINDS))


class _Doc:
    """Renders the reference from one schema."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.defs: dict[str, Any] = schema.get("$defs", {})

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return self.resolve(self.defs[ref.rsplit("/", 1)[1]]) if ref else node

    def type_of(self, node: dict[str, Any]) -> str:
        if "$ref" in node:
            return "object"
        if "const" in node:
            return f"`{json.dumps(node['const'])}`"
        if "enum" in node:
            return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
        branches = node.get("anyOf") or node.get("oneOf")
        if branches:
            if _is_duration(node):
                return "duration"
            names = [self.type_of(b) for b in branches if b != INTERPOLATED]
            return " \\| ".join(dict.fromkeys(names))
        kind = node.get("type")
        if kind == "array":
            return f"list[{self.type_of(node.get('items', {}))}]"
        if kind == "object" and "properties" not in node:
            values = node.get("additionalProperties")
            inner = self.type_of(values) if isinstance(values, dict) and values else "any"
            return f"map[string, {inner}]"
        if kind == "null":
            return "null"
        return str(kind or "any")

    def objects_in(self, node: dict[str, Any]) -> list[dict[str, Any]]:
        """The object schemas a value may be (through ``$ref``, ``anyOf``, null left out)."""
        branches = node.get("anyOf", [node])
        return [
            self.resolve(b)
            for b in branches
            if "properties" in self.resolve(b) and "oneOf" not in b
        ]

    def rows(
        self, node: dict[str, Any], prefix: str, skip: frozenset[str] = frozenset()
    ) -> Iterator[list[str]]:
        """One row per key under ``node``, depth first, with dotted paths from ``prefix``."""
        required = set(node.get("required", []))
        for key, prop in node.get("properties", {}).items():
            if key in skip:
                continue
            path = f"{prefix}{key}"
            yield [path, self.type_of(prop), _default(prop, key in required), _text(prop)]
            if _is_union(prop.get("additionalProperties")) or _is_union(prop.get("items")):
                continue  # connectors and handlers: documented per kind below
            for inner in self.objects_in(prop):
                yield from self.rows(inner, f"{path}.")
            values = prop.get("additionalProperties")
            if isinstance(values, dict):
                for inner in self.objects_in(values):
                    yield from self.rows(inner, f"{path}.<name>.")
            items = prop.get("items")
            if isinstance(items, dict):
                for inner in self.objects_in(items):
                    yield from self.rows(inner, f"{path}[].")

    def kinds(self, union: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        for branch in union.get("oneOf", union.get("anyOf", [union])):
            model = self.resolve(branch)
            yield model["properties"]["type"]["const"], model


def _is_union(node: Any) -> bool:
    return isinstance(node, dict) and "oneOf" in node


def _is_duration(node: dict[str, Any]) -> bool:
    return any(b.get("pattern") == DURATION_PATTERN for b in node.get("anyOf", []))


def _default(node: dict[str, Any], required: bool) -> str:
    if required:
        return "required"
    if "default" not in node:
        return ""
    value = node["default"]
    if _is_duration(node) and isinstance(value, int | float):
        return f"`{value:g}s`"
    return f"`{json.dumps(value)}`"


def _text(node: dict[str, Any]) -> str:
    text = " ".join(str(node.get("description", "")).split())
    examples = node.get("examples")
    if examples and not _is_duration(node):  # durations are explained once, at the top
        text += " Examples: " + ", ".join(f"`{json.dumps(e)}`" for e in examples) + "."
    return text.replace("|", "\\|")


def _table(rows: list[list[str]]) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    lines += ["| " + " | ".join([f"`{r[0]}`", *r[1:]]) + " |" for r in rows]
    return lines


def reference(schema: dict[str, Any]) -> str:
    """``docs/config.md`` for ``schema``."""
    doc = _Doc(schema)
    props = schema["properties"]
    out = [
        "# Config reference",
        "",
        "<!-- Generated from the config models; do not edit. Regenerate with:",
        f"     {REGENERATE} -->",
        "",
        "Every key of the config file, by its dotted path (`<name>` is a name you choose,",
        "`[]` an item of a list), with its type, default and description. The same models",
        "give the JSON Schema that `bridge schema` prints and that ships as",
        f"[`{SCHEMA_FILE}`](../{SCHEMA_FILE}).",
        "",
        "- A **duration** is a number of seconds or a string with a unit: `250ms`, `10s`,",
        "  `5m`, `1h`, `1d`.",
        "- Any value may be written as `${VAR}`, `${VAR:-default}` or `${file:PATH}`; it is",
        "  replaced when the file loads, before the value is checked, so the schema accepts",
        "  a string holding `${...}` wherever a number, boolean or choice goes.",
        "- Errors never show a secret: the value of a secret-bearing key (`token`, `secret`,",
        "  `password`, `api_key`, an `auth` header's `value` ...), a value from",
        "  `${secret:VAR}` (mark any variable this way), from `${file:PATH}` or from a variable",
        "  named like a secret (`..._TOKEN`, `..._PASSWORD`, `..._SECRET`, `..._KEY`) is shown",
        "  as `***`, and a URL's password as `user:***@`. Other values (`${PORT}`) are shown.",
        "- YAML booleans are YAML 1.2's (`true`/`false`): `on:` is a key, `yes`/`no`/`on`/`off`",
        "  are strings.",
        "",
        "## Editor support",
        "",
        "Point the YAML language server (VS Code's YAML extension, Neovim, JetBrains,",
        "Helix ...) at the schema with a comment on the config file's first line. In this",
        "repository, a path relative to the config file (the examples do this):",
        "",
        "```yaml",
        f"# yaml-language-server: $schema=../../{SCHEMA_FILE}",
        "version: 1",
        "```",
        "",
        "Elsewhere, write a copy with `bridge schema -o bridge.schema.json` (it also lists the",
        "kinds of installed plug-ins) and use `$schema=./bridge.schema.json`, or the schema",
        "file's URL where the repository is published. In CI, `bridge validate -c FILE`",
        "checks more than a schema can (connector references, CEL filters, event schemas,",
        "cron expressions).",
        "",
        "## Top level",
        "",
        *_table(list(doc.rows(schema, ""))),
        "",
        "## Connectors",
        "",
        "`connectors.<name>`: one of the kinds below, chosen by `type`.",
    ]
    for kind, model in doc.kinds(props["connectors"]["additionalProperties"]):
        out += ["", f"### `{kind}`", "", _text(model) or "", ""]
        out += _table(list(doc.rows(model, "connectors.<name>.")))
    shared = frozenset(HandlerConfig.model_fields) - {"type"}
    handler_union = props["handlers"]["items"]
    first = next(iter(doc.kinds(handler_union)))[1]
    out += [
        "",
        "## Handlers",
        "",
        "`handlers[]`: one of the kinds below, chosen by `type`. Every kind has these keys:",
        "",
        *_table([r for r in doc.rows(first, "handlers[].") if _top_key(r[0]) in shared]),
    ]
    for kind, model in doc.kinds(handler_union):
        own = list(doc.rows(model, "handlers[].", skip=shared))
        out += ["", f"### `{kind}`", "", _text(model) or "", ""]
        out += _table(own)
    return "\n".join(out) + "\n"


def _top_key(path: str) -> str:
    return path.removeprefix("handlers[].").split(".", 1)[0].split("[", 1)[0]


def write(root: Path = Path(".")) -> list[Path]:
    """Write both generated files under ``root``; return their paths."""
    schema = builtin_schema()
    files = {root / SCHEMA_FILE: schema_text(schema), root / REFERENCE_FILE: reference(schema)}
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)


def main() -> int:
    """Regenerate the schema file and the config reference in the current directory."""
    for path in write():
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
