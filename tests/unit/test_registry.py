"""Kind registries: the explicit mappings agree with the config unions; plugins come in by entry point."""

from __future__ import annotations

import typing
from importlib.metadata import EntryPoint
from typing import Any

import pytest

import bridge.app.kinds as kinds_module
from bridge.app import default_kinds, json_schema, load_config_text
from bridge.config import Kinds, config_model
from bridge.config import load_config_text as load_with_kinds
from bridge.errors import ConfigError
from connectors import KINDS as CONNECTOR_KINDS
from handlers import KINDS as HANDLER_KINDS


def _literal_type(model: type[Any]) -> str:
    (value,) = typing.get_args(model.model_fields["type"].annotation)
    return str(value)


def test_every_registered_kind_is_named_by_its_config_model() -> None:
    for name, kind in CONNECTOR_KINDS.items():
        assert _literal_type(kind.config) == name
    for name, kind in HANDLER_KINDS.items():
        assert _literal_type(kind.config) == name


def test_the_config_unions_hold_exactly_the_registered_kinds() -> None:
    schema = json_schema()
    defs = schema["$defs"]
    connector_refs = schema["properties"]["connectors"]["additionalProperties"]
    handler_refs = schema["properties"]["handlers"]["items"]

    def names(node: dict[str, Any]) -> set[str]:
        refs = [r["$ref"] for r in node.get("oneOf", node.get("anyOf", [node]))]
        return {defs[r.rsplit("/", 1)[1]]["properties"]["type"]["const"] for r in refs}

    assert names(connector_refs) == set(CONNECTOR_KINDS)
    assert names(handler_refs) == set(HANDLER_KINDS)


def test_the_engine_knows_only_the_kinds_it_is_given() -> None:
    few = Kinds(
        connectors={"memory": CONNECTOR_KINDS["memory"]},
        handlers={"log": HANDLER_KINDS["log"], "emit": HANDLER_KINDS["emit"]},
    )
    assert config_model(few) is config_model(few)  # built once per Kinds value
    head = "version: 1\nstore: memory://\nserver: {enabled: false}\n"
    cfg = load_with_kinds(head + "handlers:\n  - {id: a, on: a/b, type: log}\n", few, {})
    assert [h.type for h in cfg.handlers] == ["log"]
    text = head + "handlers:\n  - {id: a, on: a/b, type: python, function: m:f}\n"
    with pytest.raises(ConfigError) as info:
        load_with_kinds(text, few, {})
    (issue,) = info.value.issues
    assert (issue.path, issue.line) == ("handlers[0].type", 5)
    assert issue.message.startswith("unknown type 'python' (known: ")
    load_config_text(text, {}, check=False)  # the default kinds know it


@pytest.fixture
def shout_plugin(monkeypatch: pytest.MonkeyPatch) -> Any:
    real = kinds_module.entry_points

    def entry_points(*, group: str) -> list[EntryPoint]:
        if group == "bridge.handlers":
            return [EntryPoint("shout", "tests.apps.plugin:KIND", group)]
        return list(real(group=group))

    monkeypatch.setattr(kinds_module, "entry_points", entry_points)
    default_kinds.cache_clear()
    yield
    default_kinds.cache_clear()


@pytest.mark.usefixtures("shout_plugin")
async def test_a_plugin_handler_kind_validates_appears_in_the_schema_and_runs() -> None:
    assert "shout" in default_kinds().handlers and "memory" in default_kinds().connectors
    assert '"shout"' in str(json_schema()).replace("'", '"')
    text = "version: 1\nstore: memory://\nserver: {enabled: false}\nhandlers:\n  - {id: loud, on: a/b, type: shout, volume: 3}\n"
    cfg = load_config_text(text, {})
    from bridge.app.runtime import Runtime
    from tests.apps import plugin

    runtime = Runtime(cfg)
    runtime.build()
    assert runtime.dispatcher is not None
    from bridge.events import Event

    await runtime.dispatcher.dispatch(
        Event(id="1", source="s", type="a/b", data={}),
        runtime.dispatcher.router.match(Event(id="1", source="s", type="a/b", data={})),
    )
    assert plugin.CALLS[-1] == "A/B!!!"
    with pytest.raises(ConfigError) as info:
        load_config_text(text.replace("volume: 3", "volume: 12"), {})
    assert info.value.issues[0].path == "handlers[0].volume"
