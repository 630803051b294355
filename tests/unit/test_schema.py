"""The config's JSON Schema describes what the loader accepts, and the generated files are current.

Every example config and every YAML snippet of the README and docs validates
against the schema (read as YAML 1.2, as the loader reads it); every property has
a description; ``schema/bridge.schema.json`` and ``docs/config.md`` are what
``make schema`` would write.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bridge.app import load_config_text
from bridge.app.reference import (
    REFERENCE_FILE,
    REGENERATE,
    SCHEMA_FILE,
    builtin_schema,
    reference,
)
from bridge.config.schema import schema_text
from bridge.config.yamlfile import parse
from bridge.errors import ConfigError
from tests.support import ROOT

# A file is a bridge config when its top level has one of these keys (cases files and
# Kubernetes manifests have none of them).
_CONFIG_KEYS = {"version", "store", "connectors", "handlers"}


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = builtin_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def config_files() -> list[Path]:
    found = []
    # deploy/ also holds multi-document Kubernetes manifests; its configs are bridge.yaml.
    for folder, pattern in (("examples", "**/*.y*ml"), ("deploy", "**/bridge.yaml")):
        for path in sorted((ROOT / folder).glob(pattern)):
            data, _ = parse(path.read_text(), str(path))
            if isinstance(data, dict) and _CONFIG_KEYS & data.keys():
                found.append(path)
    return found


def snippets() -> list[tuple[str, str]]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.S)):
            found.append((f"{doc.relative_to(ROOT)} yaml block {i + 1}", block))
    return found


def problems(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    out = []
    for error in validator.iter_errors(data):
        best = jsonschema.exceptions.best_match([error])
        where = ".".join(str(p) for p in best.absolute_path) or "<root>"
        out.append(f"{where}: {best.message[:300]}")
    return out


def test_every_example_config_and_doc_snippet_validates(
    validator: jsonschema.Draft202012Validator,
) -> None:
    files = config_files()
    blocks = snippets()
    # examples/*/bridge.yaml and deploy's configs; the README's config blocks.
    assert len(files) >= 8 and len(blocks) >= 6, (files, len(blocks))
    failures = []
    for path in files:
        data, _ = parse(path.read_text(), str(path))
        failures += [f"{path.relative_to(ROOT)}: {p}" for p in problems(validator, data)]
    for name, block in blocks:
        data, _ = parse(block, name)
        failures += [f"{name}: {p}" for p in problems(validator, data)]
    assert not failures, "\n".join(failures)


def undescribed(node: Any, path: str = "") -> list[str]:
    """Paths of properties without a description of their own, anywhere in ``node``."""
    found = []
    if isinstance(node, dict):
        for key, prop in (node.get("properties") or {}).items():
            if not isinstance(prop, dict) or not prop.get("description"):
                found.append(f"{path}.properties.{key}")
        for key, value in node.items():
            found += undescribed(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += undescribed(value, f"{path}[{i}]")
    return found


def test_every_property_has_a_description() -> None:
    missing = undescribed(builtin_schema())
    assert not missing, f"{len(missing)} properties without a description:\n" + "\n".join(missing)


def test_the_shipped_schema_file_is_current() -> None:
    shipped = ROOT / SCHEMA_FILE
    current = schema_text(builtin_schema())
    assert shipped.exists() and shipped.read_text() == current, (
        f"{SCHEMA_FILE} is stale; regenerate it with: {REGENERATE}"
    )


def test_the_config_reference_is_current() -> None:
    shipped = ROOT / REFERENCE_FILE
    current = reference(builtin_schema())
    assert shipped.exists() and shipped.read_text() == current, (
        f"{REFERENCE_FILE} is stale; regenerate it with: {REGENERATE}"
    )


def test_bridge_schema_prints_the_shipped_schema() -> None:
    # Deterministic: two runs of the command print the same text, the shipped file's.
    runs = [
        subprocess.run(
            [sys.executable, "-m", "bridge", "schema"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] == (ROOT / SCHEMA_FILE).read_text(), (
        f"`bridge schema` differs from {SCHEMA_FILE}; regenerate it with: {REGENERATE}"
    )


HANDLER = "handlers:\n  - {{id: h, type: log, on: a/b, {extra}}}\n"

AGREEMENT = [
    # (YAML, what both the loader and the schema say: valid or not)
    ("drain_timeout: 10s\n", True),
    ("drain_timeout: 1.5\n", True),
    ("drain_timeout: 250ms\n", True),
    ("drain_timeout: soon\n", False),
    ("drain_timeout: -1\n", False),
    ("drain_timeout: true\n", False),
    ("drain_timeout: ${WAIT:-30s}\n", True),
    ("server: {api: {max_in_flight: '${N:-5}'}}\n", True),
    ("server: {api: {max_in_flight: many}}\n", False),
    ("ledger: ${LEDGER:-false}\n", True),
    ("telemetry: {logs: {level: '${LEVEL:-INFO}'}}\n", True),
    ("telemetry: {logs: {level: LOUD}}\n", False),
    (HANDLER.format(extra="level: INFO"), True),
    ("handlers:\n  - {id: h, type: log, on: [a/b, c/*]}\n", True),
    ("handlers:\n  - {id: h, type: log, on: 5}\n", False),
    ("handlers:\n  - {id: h, type: log}\n", False),
    ("handlers:\n  - {id: h, type: log, on: a/b, colour: red}\n", False),
    ("handlers:\n  - {id: h, type: nope, on: a/b}\n", False),
    (
        "handlers:\n  - {id: j, type: join, start: a/start, match: 'true', within: 1m, "
        "emit: a/done}\n",
        True,
    ),
    ("connectors:\n  k: {type: kafka, bootstrap_servers: 'a:9092,b:9092'}\n", True),
    ("connectors:\n  k: {type: kafka, bootstrap_servers: [a:9092]}\n", True),
    ("connectors:\n  k: {type: kafka, bootstrap_servers: []}\n", False),
    ("connectors:\n  k: {type: cron, schedule: '@hourly', event: {type: t/x}}\n", True),
    ("connectors:\n  k: {type: cron, schedule: '@hourly'}\n", False),
]


@pytest.mark.parametrize(("text", "valid"), AGREEMENT)
def test_the_schema_and_the_loader_agree(
    validator: jsonschema.Draft202012Validator, text: str, valid: bool
) -> None:
    text = "version: 1\nstore: memory://\n" + text
    data, _ = parse(text, "<case>")
    try:
        load_config_text(text, {}, check=False)
        loads = True
    except ConfigError:
        loads = False
    assert (loads, not problems(validator, data)) == (valid, valid)


def test_the_schema_asks_for_yaml_booleans_and_numbers_where_pydantic_is_lax(
    validator: jsonschema.Draft202012Validator,
) -> None:
    # The one place the schema is stricter than the loader, on purpose: pydantic's lax
    # mode reads the strings "off"/"yes" as booleans and "5" as a number; an editor
    # should still ask for `false` and `5` (under YAML 1.2, `off` is a string).
    for text in ("ledger: off\n", "server: {api: {max_in_flight: '5'}}\n"):
        text = "version: 1\nstore: memory://\n" + text
        load_config_text(text, {}, check=False)
        assert problems(validator, parse(text, "<case>")[0])
