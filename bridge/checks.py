"""Cross-reference checks of a parsed config: what pydantic alone cannot see.

Each check yields ``(path, message)``; ``load_config`` turns them into
``ConfigIssue`` with the YAML line.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.util
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from bridge.events import EventSchema, load_schema
from bridge.filterfields import data_paths, undeclared
from bridge.routing import compile_filter
from bridge.templates import DELIVERY_ROOTS, EVENT_ROOTS, Template, TemplateError

if TYPE_CHECKING:
    from bridge.config.models import BridgeConfig
    from bridge.transport import ConnectorKind

Problem = tuple[tuple[Any, ...], str]


def cross_check(cfg: BridgeConfig, kinds: Mapping[str, ConnectorKind]) -> list[Problem]:
    """Every cross-reference problem of ``cfg``, whose connectors are of ``kinds``."""
    schemas: dict[str, EventSchema | None] = {}
    return [
        *_catalog(cfg, schemas),
        *_connectors(cfg, kinds),
        *_handlers(cfg, kinds, schemas),
        *_readiness(cfg),
    ]


def _readiness(cfg: BridgeConfig) -> Iterator[Problem]:
    named = cfg.readiness.connectors
    if isinstance(named, list):
        for index, name in enumerate(named):
            if name not in cfg.connectors:
                yield ("readiness", "connectors", index), f"no connector {name!r}"


def _catalog(cfg: BridgeConfig, schemas: dict[str, EventSchema | None]) -> Iterator[Problem]:
    """Load every event type's schema into ``schemas`` (None: it does not load)."""
    for name, spec in cfg.events.items():
        schemas[name] = None
        try:
            schemas[name] = load_schema(spec.schema_, cfg.base_dir)
        except Exception as exc:  # any import-time error of user code is a config error
            yield ("events", name, "schema"), f"schema does not load: {exc}"


def _connectors(cfg: BridgeConfig, kinds: Mapping[str, ConnectorKind]) -> Iterator[Problem]:
    paths: dict[str, str] = {}
    for name, conn in cfg.connectors.items():
        kind = kinds[conn.type]
        sdk = getattr(kind, "sdk", None)
        if sdk is not None and importlib.util.find_spec(sdk[0]) is None:
            yield (
                ("connectors", name, "type"),
                f"type {conn.type!r} needs {sdk[0]}, which is not installed: install the "
                f"{sdk[1]!r} extra (pip install 'fanout-bridge[{sdk[1]}]')",
            )
        check = getattr(conn, "check", None)
        if check is not None:
            for sub_path, message in check(cfg):
                yield ("connectors", name, *sub_path), message
        if getattr(kind, "needs_server", False):
            path = getattr(conn, "path", None) or f"/hooks/{name}"
            if not cfg.server.enabled:
                yield (
                    ("connectors", name),
                    "a webhook needs the bridge's server (server.enabled: true)",
                )
            if path in paths:
                yield (
                    ("connectors", name, "path"),
                    f"path {path} is also used by connector {paths[path]!r}",
                )
            paths.setdefault(path, name)
        if conn.consume is not None and kind.source is None:
            yield ("connectors", name, "consume"), f"connector type {conn.type!r} cannot consume"
        if conn.consume is None:
            continue
        mapping = conn.consume.event
        for field in ("type", "source", "id", "subject"):
            text = getattr(mapping, field)
            if text is not None:
                try:
                    Template(text, DELIVERY_ROOTS)
                except TemplateError as exc:
                    yield ("connectors", name, "consume", "event", field), str(exc)
        for i, ref in enumerate(mapping.correlation_id):
            root = ref.replace(":", ".", 1).partition(".")[0]
            if root not in ("header", "data", "meta"):
                yield (
                    ("connectors", name, "consume", "event", "correlation_id", i),
                    f"{ref!r}: use header:NAME, data.PATH or meta.NAME",
                )


def _handlers(
    cfg: BridgeConfig, kinds: Mapping[str, ConnectorKind], schemas: Mapping[str, EventSchema | None]
) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    catalog = list(cfg.events)
    for i, handler in enumerate(cfg.handlers):
        path = ("handlers", i)
        if handler.id in seen:
            yield (
                (*path, "id"),
                f"duplicate handler id {handler.id!r} (also handlers[{seen[handler.id]}])",
            )
        seen.setdefault(handler.id, i)
        if not handler.on:
            yield (*path, "on"), "subscribe to at least one event type"
        for j, pattern in enumerate(handler.on):
            if catalog and not any(_overlaps(pattern, known) for known in catalog):
                yield (*path, "on", j), f"no event type in the catalog matches {pattern!r}"
        if handler.filter is not None:
            try:
                compile_filter(handler.filter)
            except ValueError as exc:
                yield (*path, "filter"), f"filter does not compile: {_first_line(exc)}"
            else:
                types = [t for t in schemas if any(_overlaps(p, t) for p in handler.on)]
                for message in _filter_fields(handler.filter, types, schemas):
                    yield (*path, "filter"), message
        try:
            Template(handler.idempotency_key, EVENT_ROOTS)
        except TemplateError as exc:
            yield (*path, "idempotency_key"), str(exc)
        for field, conn_name in handler.connector_refs().items():
            conn = cfg.connectors.get(conn_name)
            field_path = (*path, *field.split("."))
            if conn is None:
                known = ", ".join(sorted(cfg.connectors)) or "none defined"
                yield field_path, f"unknown connector {conn_name!r} (known: {known})"
            elif kinds[conn.type].publisher is None:
                yield field_path, f"connector {conn_name!r} ({conn.type}) cannot publish"
        budget = handler.retry_budget
        if isinstance(budget, str) and budget not in cfg.retry_budgets:
            known = ", ".join(sorted(cfg.retry_budgets)) or "none defined"
            yield (*path, "retry_budget"), f"unknown retry budget {budget!r} (known: {known})"
        check = getattr(handler, "check", None)
        if check is not None:
            for sub_path, message in check(cfg):
                yield (*path, *sub_path), message


def _filter_fields(
    expression: str, types: list[str], schemas: Mapping[str, EventSchema | None]
) -> Iterator[str]:
    """A message per ``event.data`` field the filter reads that none of the event
    types' schemas declares (``bridge.filterfields``); nothing when a type has none."""
    documents = [s.data_schema() if s is not None else None for s in (schemas[t] for t in types)]
    if not documents or any(d is None for d in documents):
        return
    for field_path in data_paths(expression):
        misses = [undeclared(d, field_path) for d in documents if d is not None]
        if any(m is None for m in misses):
            continue
        index = min(m[0] for m in misses if m is not None)
        declared = sorted({n for m in misses if m is not None and m[0] == index for n in m[1]})
        shown = ".".join(("event.data", *field_path[: index + 1]))
        where = "event type " + ", ".join(types) if len(types) < 4 else f"{len(types)} event types"
        message = (
            f"{shown}: the schema of {where} has no field {field_path[index]!r}, "
            "so the filter would never match"
        )
        near = difflib.get_close_matches(field_path[index], declared, n=1, cutoff=0.6)
        if near:
            message += f"; did you mean `{'.'.join(('event.data', *field_path[:index], near[0]))}`?"
        elif declared:
            message += f" (its fields: {', '.join(declared)})"
        yield message


def _overlaps(pattern: str, known: str) -> bool:
    return (
        pattern == known
        or fnmatch.fnmatchcase(pattern, known)
        or fnmatch.fnmatchcase(known, pattern)
    )


def _first_line(exc: Exception) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
