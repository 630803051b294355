"""``bridge test`` timelines: messages handed over at set times on a clock the case moves
by hand, so a config's throttles and debounces are tested without waiting."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge.app.cli import main

CONFIG = """\
version: 1
store: memory://
events:
  user/changed: {schema: none}
connectors:
  users:
    type: memory
    consume:
      event: {type: user/changed, id: "{meta.message_id}"}
handlers:
  - id: reindex
    on: user/changed
    type: log
    debounce: {period: 5s, key: "event.data.user"}
  - id: notify
    on: user/changed
    type: log
    throttle: {limit: 1, period: 1s}
"""

CASES = """\
cases:
  - name: the debounce keeps each user's last change; the throttle spaces the rest
    connector: users
    messages:
      - {at: 0s, body: {user: 1}, meta: {message_id: a}}
      - {at: 1s, body: {user: 1}, meta: {message_id: b}}
      - {at: 1s, body: {user: 2}, meta: {message_id: c}}
    expect:
      timeline:
        a: {reindex: debounced, notify: {status: succeeded, started_at: 0s}}
        b:
          reindex: {status: succeeded, started_at: 6s}
          notify: {status: succeeded, started_at: 1s}
        c:
          reindex: {status: succeeded, started_at: 6s}
          notify: {status: succeeded, started_at: %s}
"""


def run(tmp_path: Path, started: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    cases = tmp_path / "cases.yaml"
    cases.write_text(textwrap.dedent(CASES % started))
    code = main(["test", "-c", str(config), str(cases)])
    return code, capsys.readouterr().out


def test_a_timeline_checks_statuses_and_start_times_on_the_case_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(tmp_path, "2s", capsys)
    assert code == 0, out
    assert "1 passed, 0 failed" in out


def test_a_wrong_start_time_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(tmp_path, "1s", capsys)
    assert code == 1, out
    assert "timeline.c.notify.started_at: expected 1s, started at 2s" in out
