"""A filter's ``event.data`` fields are checked against the event's schema, as
``bridge validate`` shows it: a typo is an error with file, line and path, and the
nearest declared field; before, the handler silently never ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.filterfields import data_paths, undeclared
from tests.support import bridge_command

MODELS = """\
from pydantic import BaseModel, ConfigDict

class Address(BaseModel):
    city: str
    zip: str | None = None

class Signup(BaseModel):
    email: str
    source: str = "web"
    address: Address | None = None
    tags: dict[str, str] = {}

class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")
    email: str
"""

ORDER = {
    "type": "object",
    "properties": {"total": {"type": "number"}, "lines": {"type": "array"}},
    "additionalProperties": False,
}


def validate(tmp_path: Path, handlers: str) -> tuple[int, list[str]]:
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "order.json").write_text(json.dumps(ORDER))
    config = tmp_path / "bridge.yaml"
    config.write_text(
        "version: 1\nstore: memory://\nevents:\n"
        "  user/signup: {schema: 'models:Signup'}\n"
        "  user/loose: {schema: 'models:Loose'}\n"
        "  order/placed: {schema: order.json}\n"
        "  db/*: {schema: none}\n"
        "handlers:\n" + handlers
    )
    done = bridge_command("validate", "-c", str(config))
    return done.returncode, [line.removeprefix(f"{config}:") for line in done.stderr.splitlines()]


def test_a_misspelt_field_is_an_error_with_line_path_and_the_nearest_field(
    tmp_path: Path,
) -> None:
    code, lines = validate(
        tmp_path,
        "  - {id: ok, on: user/signup, type: log, filter: \"event.data.source != 'test'\"}\n"
        "  - {id: typo, on: user/signup, type: log, filter: \"event.data.sorce != 'test'\"}\n"
        "  - id: deep\n    on: 'user/sign*'\n    type: log\n"
        "    filter: \"event.data.address.cty == 'x' && event.data.email.endsWith('@a.b')\"\n"
        "  - {id: json, on: order/placed, type: log, filter: 'event.data.totl > 10'}\n",
    )
    assert code == 1, lines
    never = "so the filter would never match"
    assert lines == [
        "10: handlers[1].filter: event.data.sorce: the schema of event type user/signup has no "
        f"field 'sorce', {never}; did you mean `event.data.source`?",
        "14: handlers[2].filter: event.data.address.cty: the schema of event type user/signup "
        f"has no field 'cty', {never}; did you mean `event.data.address.city`?",
        "15: handlers[3].filter: event.data.totl: the schema of event type order/placed has no "
        f"field 'totl', {never}; did you mean `event.data.total`?",
        "3 errors in " + str(tmp_path / "bridge.yaml"),
    ]


def test_fields_the_schema_cannot_rule_out_pass(tmp_path: Path) -> None:
    code, lines = validate(
        tmp_path,
        # a type without a schema; a model open to extra fields; a map's keys; a string literal;
        # a field declared by one of the types the handler gets
        "  - {id: a, on: 'db/*', type: log, filter: 'event.data.anything.at.all'}\n"
        "  - {id: b, on: user/loose, type: log, filter: 'event.data.whatever == 1'}\n"
        "  - {id: c, on: user/signup, type: log, filter: \"event.data.tags.color == 'red'\"}\n"
        "  - {id: d, on: user/signup, type: log, filter: \"event.data.email == 'event.data.x'\"}\n"
        "  - {id: e, on: ['user/signup', 'order/placed'], type: log, "
        "filter: 'event.data.total > 1 || event.data.email != \"\"'}\n",
    )
    assert code == 0, lines


@pytest.mark.parametrize(
    ("expression", "paths"),
    [
        ("event.data.a.b == 1", [("a", "b")]),
        ("event.data.name.startsWith('x')", [("name",)]),
        ("has(event.data.x) && event.data.x > 0", [("x",)]),
        ("'event.data.quoted' == event.type", []),
        ("event.data['key'] == 1 || other.event.data.z", []),
        ("event . data . spaced", [("spaced",)]),
    ],
)
def test_data_paths(expression: str, paths: list[tuple[str, ...]]) -> None:
    assert data_paths(expression) == paths


def test_undeclared_reports_where_the_path_leaves_the_schema() -> None:
    assert undeclared(ORDER, ("total",)) is None
    assert undeclared(ORDER, ("totl",)) == (0, ["total", "lines"])
    assert undeclared(ORDER, ("lines", "x")) == (1, [])  # an array has no fields
    assert undeclared({"type": "object"}, ("x",)) is None  # no field list: cannot tell
