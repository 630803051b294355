"""The config file: interpolation, unknown keys, cross references, and errors that name the line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge.app import config_model, json_schema, load_config, load_config_text
from bridge.errors import ConfigError
from tests.support import ROOT

GOOD = """\
version: 1
store: memory://
events:
  order/created: {schema: none}
connectors:
  orders:
    type: memory
    consume:
      event: {type: order/created, correlation_id: ["header:x-correlation-id"]}
handlers:
  - id: ship
    on: order/created
    type: log
  - id: bill
    on: [order/*]
    type: log
    filter: "event.data.total > 10"
    retry: {attempts: 5, min_delay: 100ms, max_delay: 2s}
    timeout: 1m
"""


def issues(text: str, env: dict[str, str] | None = None) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(textwrap.dedent(text), env or {})
    return [(i.line, i.path, i.message) for i in info.value.issues]


def test_a_good_config_loads_with_durations_in_seconds() -> None:
    cfg = load_config_text(GOOD, {})
    bill = cfg.handlers[1]
    assert bill.on == ["order/*"]
    assert bill.retry is not None and bill.retry.min_delay == 0.1 and bill.retry.max_delay == 2.0
    assert bill.timeout == 60.0
    assert cfg.handlers[0].on == ["order/created"]  # `on` is a key, never YAML 1.1's True


def test_unknown_key_is_reported_with_its_line() -> None:
    text = GOOD.replace("    timeout: 1m\n", "    timeout: 1m\n    retires: 3\n")
    assert issues(text) == [(20, "handlers[1].retires", "unknown key")]


def test_every_error_is_reported_not_just_the_first() -> None:
    text = GOOD.replace("attempts: 5", "attempts: 0").replace("timeout: 1m", "timeout: soon")
    found = issues(text)
    assert [(line, path) for line, path, _ in found] == [
        (18, "handlers[1].retry.attempts"),
        (19, "handlers[1].timeout"),
    ]
    assert "invalid duration 'soon'" in found[1][2]


def test_unknown_connector_type_names_the_line() -> None:
    text = GOOD.replace("type: memory", "type: kafak")
    ((line, path, message),) = issues(text)
    assert (line, path) == (7, "connectors.orders.type")
    assert "kafak" in message


def test_env_interpolation_with_defaults_and_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    text = f"""\
    version: 1
    store: ${{STORE:-memory://}}
    server: {{listen: "127.0.0.1:${{PORT}}", api: {{token: "${{file:{secret}}}"}}}}
    telemetry: {{service_name: "$${{literal}}"}}
    """
    cfg = load_config_text(textwrap.dedent(text), {"PORT": "9999"})
    assert cfg.store == "memory://"
    assert cfg.server.port == 9999
    assert cfg.server.api.token == "s3cr3t"
    assert cfg.telemetry.service_name == "${literal}"


def test_missing_env_var_names_the_variable_and_line() -> None:
    text = """\
    version: 1
    store: memory://
    server:
      listen: "127.0.0.1:${PORT}"
    """
    assert issues(text) == [
        (
            4,
            "server.listen",
            "environment variable PORT is not set (use ${PORT:-default} for a default)",
        )
    ]


def test_cross_references_are_checked() -> None:
    text = """\
    version: 1
    store: memory://
    events:
      a/b: {schema: "no_such_module:Model"}
    handlers:
      - {id: h1, on: a/b, type: log, filter: "event.data. =="}
      - {id: h1, on: c/d, type: log}
      - {id: p, on: a/b, type: publish, connector: nowhere, destination: x}
      - {id: f, on: a/b, type: python, function: "tests.apps.recorder:does_not_exist"}
    """
    found = {(line, path): message for line, path, message in issues(text)}
    assert "cannot import module 'no_such_module'" in found[(4, "events.a/b.schema")]
    assert found[(6, "handlers[0].filter")].startswith("filter does not compile")
    assert "duplicate handler id 'h1'" in found[(7, "handlers[1].id")]
    assert "no event type in the catalog matches 'c/d'" in found[(7, "handlers[1].on[0]")]
    assert "unknown connector 'nowhere'" in found[(8, "handlers[2].connector")]
    assert "has no attribute 'does_not_exist'" in found[(9, "handlers[3].function")]


def test_invalid_yaml_names_the_line() -> None:
    ((line, _, message),) = issues("version: 1\nhandlers:\n  - id: [unclosed\n")
    assert line == 4 and "invalid YAML" in message


def test_schema_lists_every_kind() -> None:
    schema = json_schema()
    text = str(schema)
    for kind in ("memory", "python", "emit", "log", "publish"):
        assert f"'{kind}'" in text
    assert schema["additionalProperties"] is False
    assert config_model().model_fields.keys() >= {"connectors", "handlers", "events", "store"}


def test_bridge_validate_prints_file_line_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        GOOD.replace("    on: order/created\n", "    on: order/created\n    colour: red\n")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 1
    assert f"{config}:13: handlers[0].colour: unknown key" in proc.stderr
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    ok = subprocess.run(
        [sys.executable, "-m", "bridge", "validate", "-c", str(good)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr


def test_examples_validate() -> None:
    for path in sorted((ROOT / "examples").glob("*/bridge.yaml")):
        load_config(path)


def test_webhooks_need_the_server_and_distinct_paths() -> None:
    text = """\
    version: 1
    store: memory://
    server: {enabled: false}
    connectors:
      a: {type: webhook, provider: json, path: /hooks/x, event: {type: t/a}}
      b: {type: webhook, provider: json, path: /hooks/x, event: {type: t/b}}
    """
    found = {(line, path): message for line, path, message in issues(text)}
    assert "needs the bridge's server" in found[(5, "connectors.a")]
    assert found[(6, "connectors.b.path")] == "path /hooks/x is also used by connector 'a'"
