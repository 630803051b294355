"""``bridge test`` timelines for every flow control of issue 20, on the case's hand-moved
clock (no real time passes): rate_limit, idempotency, singleton (skip and cancel),
priority, concurrency_key, cancel_on, batch and retry_budget (throttle and debounce:
``test_casetest_flow.py``). A stub's ``takes`` makes runs overlap on that clock;
``ended_at`` says when a run's last attempt ended."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bridge import Context, Event
from bridge.app.cli import main

CONFIG = """\
version: 1
store: memory://
events:
  "c/*": {schema: none}
defaults: {retry: {attempts: 3, min_delay: 1s, max_delay: 1s, jitter: 0}}
handlers:
  - {id: limited, on: c/rate, type: log, rate_limit: {count: 2, per: 10s, mode: skip}}
  - {id: once, on: c/idem, type: log, idempotency: {key: event.data.order, ttl: 1m}}
  - {id: solo, on: c/solo, type: log, singleton: {key: event.data.user, mode: skip}}
  - {id: latest, on: c/latest, type: log, singleton: {key: event.data.user, mode: cancel}}
  - id: ranked
    on: c/rank
    type: log
    concurrency: 1
    priority: {run: "event.data.plan == 'pro' ? 100 : 0"}
  - {id: perkey, on: c/key, type: log, concurrency_key: "{data.user}", concurrency_per_key: 1}
  - id: remind
    on: c/remind
    type: log
    throttle: {limit: 1, period: 10s}
    cancel_on: [{event: c/paid, match: event.data.order}]
  - id: bulk
    on: c/bulk
    type: python
    function: tests.unit.test_casetest_controls:bulk
    batch: {max_size: 2, timeout: 5s}
  - id: budgeted
    on: c/budget
    type: log
    retry_budget: {ratio: 0.0, window: 10s, min_per_second: 0.1}
"""

CASES = """\
cases:
  - name: "rate_limit (skip): two runs per 10 s window, the third skipped"
    messages:
      - {at: 0s, body: {specversion: "1.0", id: r1, source: t, type: c/rate, data: {}}}
      - {at: 0s, body: {specversion: "1.0", id: r2, source: t, type: c/rate, data: {}}}
      - {at: 1s, body: {specversion: "1.0", id: r3, source: t, type: c/rate, data: {}}}
      - {at: 11s, body: {specversion: "1.0", id: r4, source: t, type: c/rate, data: {}}}
    expect:
      timeline:
        r1: {limited: {status: succeeded, started_at: 0s}}
        r2: {limited: {status: succeeded, started_at: 0s}}
        r3: {limited: skipped}
        r4: {limited: {status: succeeded, started_at: 11s}}
  - name: "idempotency: one run per order per minute, whatever the event id"
    messages:
      - {at: 0s, body: {specversion: "1.0", id: i1, source: t, type: c/idem, data: {order: 7}}}
      - {at: 30s, body: {specversion: "1.0", id: i2, source: t, type: c/idem, data: {order: 7}}}
      - {at: 30s, body: {specversion: "1.0", id: i3, source: t, type: c/idem, data: {order: 8}}}
      - {at: 61s, body: {specversion: "1.0", id: i4, source: t, type: c/idem, data: {order: 7}}}
    expect:
      timeline:
        i1: {once: succeeded}
        i2: {once: skipped}
        i3: {once: succeeded}
        i4: {once: {status: succeeded, started_at: 61s}}
  - name: "singleton skip: a second run of a key while one runs is skipped"
    stubs: {solo: {takes: 5s}}
    messages:
      - {at: 0s, body: {specversion: "1.0", id: s1, source: t, type: c/solo, data: {user: a}}}
      - {at: 1s, body: {specversion: "1.0", id: s2, source: t, type: c/solo, data: {user: a}}}
      - {at: 1s, body: {specversion: "1.0", id: s3, source: t, type: c/solo, data: {user: b}}}
      - {at: 6s, body: {specversion: "1.0", id: s4, source: t, type: c/solo, data: {user: a}}}
    expect:
      timeline:
        s1: {solo: {status: succeeded, started_at: 0s}}
        s2: {solo: skipped}
        s3: {solo: {status: succeeded, started_at: 1s}}
        s4: {solo: {status: succeeded, started_at: 6s}}
  - name: "singleton cancel: the newer run of a key cancels the running one"
    stubs: {latest: {takes: 5s}}
    messages:
      - {at: 0s, body: {specversion: "1.0", id: l1, source: t, type: c/latest, data: {user: a}}}
      - {at: 1s, body: {specversion: "1.0", id: l2, source: t, type: c/latest, data: {user: a}}}
    expect:
      timeline:
        l1: {latest: {status: cancelled, started_at: 0s, ended_at: 1s}}
        l2: {latest: {status: succeeded, started_at: 1s}}
  - name: "priority: a pro run waiting for the slot starts before an earlier free one"
    stubs: {ranked: {takes: 1s}}
    messages:
      - {at: 0s, body: {specversion: "1.0", id: p1, source: t, type: c/rank, data: {plan: free}}}
      - {at: 500ms, body: {specversion: "1.0", id: p2, source: t, type: c/rank, data: {plan: free}}}
      - {at: 500ms, body: {specversion: "1.0", id: p3, source: t, type: c/rank, data: {plan: pro}}}
    expect:
      timeline:
        p1: {ranked: {status: succeeded, started_at: 0s}}
        p2: {ranked: {status: succeeded, started_at: 2s}}
        p3: {ranked: {status: succeeded, started_at: 1s}}
  - name: "concurrency_key: one run per user at a time, other users unaffected"
    stubs: {perkey: {takes: 2s}}
    messages:
      - {at: 0s, body: {specversion: "1.0", id: k1, source: t, type: c/key, data: {user: a}}}
      - {at: 0s, body: {specversion: "1.0", id: k2, source: t, type: c/key, data: {user: a}}}
      - {at: 0s, body: {specversion: "1.0", id: k3, source: t, type: c/key, data: {user: b}}}
    expect:
      timeline:
        k1: {perkey: {status: succeeded, started_at: 0s}}
        k2: {perkey: {status: succeeded, started_at: 2s}}
        k3: {perkey: {status: succeeded, started_at: 0s}}
  - name: "cancel_on: a payment cancels its order's throttled reminder"
    messages:
      - {at: 0s, body: {specversion: "1.0", id: m1, source: t, type: c/remind, data: {order: 1}}}
      - {at: 0s, body: {specversion: "1.0", id: m2, source: t, type: c/remind, data: {order: 2}}}
      - {at: 0s, body: {specversion: "1.0", id: m3, source: t, type: c/remind, data: {order: 3}}}
      - {at: 3s, body: {specversion: "1.0", id: paid, source: t, type: c/paid, data: {order: 2}}}
    expect:
      timeline:
        m1: {remind: {status: succeeded, started_at: 0s}}
        m2: {remind: cancelled}
        m3: {remind: {status: succeeded, started_at: 20s}}
        paid: {remind/cancel: succeeded}
  - name: "batch: full at 2 events, or at its 5 s timeout"
    messages:
      - {at: 0s, body: {specversion: "1.0", id: b1, source: t, type: c/bulk, data: {}}}
      - {at: 1s, body: {specversion: "1.0", id: b2, source: t, type: c/bulk, data: {}}}
      - {at: 2s, body: {specversion: "1.0", id: b3, source: t, type: c/bulk, data: {}}}
    expect:
      timeline:
        b1: {bulk: {status: succeeded, started_at: 1s, result: 2}}
        b2: {bulk: {status: succeeded, started_at: 1s, result: 2}}
        b3: {bulk: {status: succeeded, started_at: 7s, result: 1}}
  - name: "retry_budget: the second retry waits for the budget"
    stubs: {budgeted: {error: "ConnectionError: down", fail_attempts: 1}}
    messages:
      - {at: 0s, body: {specversion: "1.0", id: u1, source: t, type: c/budget, data: {}}}
      - {at: 0s, body: {specversion: "1.0", id: u2, source: t, type: c/budget, data: {}}}
    expect:
      timeline:
        u1: {budgeted: {status: succeeded, attempts: 1, ended_at: 1s}}
        u2: {budgeted: {status: succeeded, attempts: 1, ended_at: 12s}}
"""


def bulk(events: Sequence[Event[Any]], ctx: Context) -> int:
    """A batching handler: how many events its batch held."""
    return len(events)


def run(tmp_path: Path, cases: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    path = tmp_path / "cases.yaml"
    path.write_text(cases)
    code = main(["test", "-c", str(config), str(path)])
    return code, capsys.readouterr().out


def test_every_control_is_tested_on_the_case_clock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(tmp_path, CASES, capsys)
    assert code == 0, out
    assert "9 passed, 0 failed" in out


def test_a_wrong_end_time_or_order_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = CASES.replace(
        "p2: {ranked: {status: succeeded, started_at: 2s}}",
        "p2: {ranked: {status: succeeded, started_at: 1s}}",
    )
    wrong = wrong.replace("ended_at: 12s", "ended_at: 1s")
    wrong = wrong.replace(
        "b3: {bulk: {status: succeeded, started_at: 7s, result: 1}}",
        "b3: {bulk: {status: succeeded, started_at: 2s, result: 1}}",
    )
    code, out = run(tmp_path, wrong, capsys)
    assert code == 1, out
    assert "timeline.p2.ranked.started_at: expected 1s, started at 2s" in out
    assert "timeline.u2.budgeted.ended_at: expected 1s, ended at 12s" in out
    assert "timeline.b3.bulk.started_at: expected 2s, started at 7s" in out
    assert "6 passed, 3 failed" in out
