"""The seams of the engine: its config and env values, the router lookup, its import graph."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from bridge.app import load_config_text
from bridge.dispatch import DispatchConfig, DispatchEnv
from bridge.routing import Router, Subscription
from bridge.store import MemoryStore
from bridge.tracing import Tracing

CONFIG = textwrap.dedent(
    """\
    version: 1
    store: memory://
    server: {enabled: false}
    ledger: false
    unrouted: drop
    max_fanout: 7
    defaults: {inline_retry_limit: 12s}
    events:
      order/*: {schema: none, on_complete: order/done}
      user/created: {schema: none}
    connectors:
      slow: {type: memory, topic: a, consume: {event: {type: user/created}, inline_retry_limit: 1h}}
      plain: {type: memory, topic: b, consume: {event: {type: user/created}}}
    handlers:
      - {id: h, on: user/created, type: python, function: 'tests.unit.test_dispatch:ok'}
    """
)


def test_dispatch_config_takes_what_the_bridge_config_says() -> None:
    config = DispatchConfig.from_config(load_config_text(CONFIG, {}))
    assert (config.ledger, config.unrouted, config.max_fanout) == (False, "drop", 7)
    assert config.inline_limit("slow") == 3600.0
    assert config.inline_limit("plain") == 12.0  # no limit of its own: the default
    assert config.inline_limit("api") == 12.0
    assert dict(config.completions) == {"order/*": "order/done"}


def test_a_tracing_that_is_not_enabled_means_no_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    disabled = Tracing(None)
    assert not disabled.enabled
    assert DispatchEnv(MemoryStore(), tracing=disabled).tracing is None


def test_the_router_finds_a_subscription_by_handler_id() -> None:
    a = Subscription("a", ("x/*",), "target a")
    b = Subscription("b", ("y",), "target b")
    router = Router([a, b])
    assert router.subscription("b") is b
    assert router.subscription("missing") is None


def _imports(root: Path, package: str) -> dict[str, set[str]]:
    """Every bridge module under ``root`` and the bridge modules it imports (any way)."""
    modules = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def test_the_engine_modules_import_each_other_in_one_direction_only() -> None:
    graph = _imports(Path(__file__).resolve().parents[2], "bridge")
    engine = [
        m
        for m in graph
        if m.startswith(("bridge.dispatch", "bridge.flow"))
        or m in {"bridge.clock", "bridge.limits", "bridge.routing"}
    ]
    for start in engine:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph[todo.pop()]:
                assert nxt != start, f"{start} imports itself through {nxt}'s imports"
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
