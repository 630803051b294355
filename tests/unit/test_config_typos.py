"""Typos in a config, as ``bridge validate`` shows them: the nearest known path is suggested."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app.config import json_schema
from bridge.config.suggest import known_paths, suggestion
from tests.support import bridge_command

CONFIG = """\
version: 1
store: memory://
logs: {level: debug}
serevr: {listen: "127.0.0.1:8080"}
events: {job/*: {schema: none}}
connectors:
  k: {type: kafka, bootstrap_servers: x, consume: {topics: [a], group_id: g, ordering: key,
      event: {type: job/x}, max_in_flght: 3}}
handlers:
  - {id: a, on: job/x, type: log, retyr: {attempts: 2}}
  - {id: b, on: job/x, type: log, attempts: 3}
  - {id: c, on: job/x, type: log, zzqqxx: 3}
"""


def validate(config: Path) -> tuple[int, list[str]]:
    done = bridge_command("validate", "-c", str(config))
    return done.returncode, done.stderr.splitlines()


def test_validate_suggests_the_nearest_known_path_for_each_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    code, lines = validate(config)
    assert code == 1, lines
    assert set(lines) == {
        f"{config}:3: logs: unknown key; did you mean `telemetry.logs`?",
        f"{config}:4: serevr: unknown key; did you mean `server`?",
        f"{config}:8: connectors.k.consume.max_in_flght: unknown key; "
        "did you mean `connectors.k.consume.max_in_flight`?",
        f"{config}:10: handlers[0].retyr: unknown key; did you mean `handlers[0].retry`?",
        f"{config}:11: handlers[1].attempts: unknown key; "
        "did you mean `handlers[1].retry.attempts`?",
        f"{config}:12: handlers[2].zzqqxx: unknown key",
        f"6 errors in {config}",
    }


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (("telemetry", "lgos"), "telemetry.logs"),
        (("logs",), "telemetry.logs"),
        (("metrics",), "telemetry.metrics"),
        (("handlers", 3, "concurency"), "handlers[3].concurrency"),
        (("connectors", "orders", "consume", "group"), "connectors.orders.consume.group_id"),
        (("nothing_like_it_at_all",), None),
    ],
)
def test_suggestion_searches_every_known_path(where: tuple[object, ...], expected: str) -> None:
    assert suggestion(known_paths(json_schema()), where) == expected
