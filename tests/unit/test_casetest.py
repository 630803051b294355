"""``bridge test -c FILE CASES.yaml``: config tests without brokers, their diffs and exit codes."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bridge import Context, Event
from bridge.app.cli import main
from tests.support import ROOT, bridge_command


async def announce(event: Event[Any], ctx: Context) -> dict[str, int]:
    for n in event.data["items"]:
        ctx.emit("item/ready", {"n": n})
    return {"emitted": len(event.data["items"])}


CONFIG = """\
version: 1
store: memory://
events:
  order/placed: {schema: none}
  item/ready: {schema: none}
connectors:
  orders:
    type: memory
    consume:
      event:
        type: order/placed
        id: "{meta.message_id}"
        correlation_id: ["header:x-correlation-id"]
handlers:
  - {id: splitter, on: order/placed, type: python, function: "tests.unit.test_casetest:announce"}
  - id: big-orders
    on: order/placed
    type: python
    function: "tests.unit.test_casetest:announce"
    filter: "event.data.total > 100"
  - {id: items, on: item/ready, type: log}
"""


def write(tmp_path: Path, cases: str) -> tuple[Path, Path]:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG)
    file = tmp_path / "cases.yaml"
    file.write_text(textwrap.dedent(cases))
    return config, file


def test_the_newsletter_examples_cases_pass(capsys: pytest.CaptureFixture[str]) -> None:
    example = ROOT / "examples" / "newsletter"
    code = main(["test", "-c", str(example / "bridge.yaml"), str(example / "cases.yaml")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("PASS  ") == 5 and "5 passed, 0 failed" in out


def test_a_broker_message_is_normalized_routed_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, cases = write(
        tmp_path,
        """\
        cases:
          - name: a big order goes to both handlers and emits one child per item
            connector: orders
            message:
              body: {total: 250, items: [1, 2]}
              headers: {x-correlation-id: corr-9}
              meta: {message_id: orders-0-17}
            expect:
              event: {type: order/placed, id: orders-0-17, correlation_id: corr-9, data: {total: 250}}
              handlers: [splitter, big-orders]
              runs:
                splitter: {status: succeeded, result: {emitted: 2}}
                big-orders: succeeded
              emitted: [{type: item/ready, data: {n: 1}}, {type: item/ready, data: {n: 2}},
                        {type: item/ready}, {type: item/ready}]
          - name: a small order skips the filtered handler
            connector: orders
            message: {body: {total: 5, items: []}, meta: {message_id: m2}}
            expect: {handlers: [splitter]}
          - name: a body that is not JSON is rejected
            connector: orders
            message: {body: "{oops"}
            expect: {invalid: malformed_json}
        """,
    )
    code = main(["test", "-c", str(config), str(cases)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "3 passed, 0 failed" in out


def test_failures_print_a_readable_diff_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, cases = write(
        tmp_path,
        """\
        cases:
          - name: wrong on every count
            connector: orders
            message:
              body: {total: 5, items: [1]}
              meta: {message_id: m1}
            stubs:
              splitter: {error: "RuntimeError: database locked"}
            expect:
              event: {type: order/shipped, correlation_id: m1, data: {total: 6, customer: {id: 3}}}
              handlers: [splitter, big-orders]
              runs:
                splitter: {status: succeeded, attempts: 0}
                big-orders: succeeded
          - name: a good message expected to be rejected
            connector: orders
            message: {body: {total: 1, items: []}, meta: {message_id: m3}}
            expect: {invalid: schema}
          - name: no such connector
            connector: payments
            message: {body: {}}
          - name: this one passes
            connector: orders
            message: {body: {total: 1, items: []}, meta: {message_id: m4}}
            expect: {handlers: [splitter]}
        """,
    )
    code = main(["test", "-c", str(config), str(cases)])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 passed, 3 failed" in out
    for line in [
        "FAIL  wrong on every count",
        "- event.type: expected 'order/shipped', got 'order/placed'",
        "- event.data.total: expected 6, got 5",
        '- event.data.customer: missing (expected {"id":3})',
        "- handlers: expected ['big-orders', 'splitter'], got ['splitter'] (missing ['big-orders'])",
        "- runs.splitter.status: expected succeeded, got dead_lettered (RuntimeError: database locked)",
        "- runs.splitter.attempts: expected 0 failed, got 3",
        "- runs.big-orders: expected succeeded, but the handler did not run",
        "- invalid: expected 'schema', but it became event order/placed",
        "- connector: no consuming connector 'payments' (known: api, orders)",
        "PASS  this one passes",
    ]:
        assert line in out, f"{line!r} not in:\n{out}"


def test_a_malformed_cases_file_names_each_problem_with_its_line(tmp_path: Path) -> None:
    config, cases = write(
        tmp_path,
        """\
        cases:
          - name: typo
            mesage: {body: {}}
          - name: a file that is not there
            message: {body_file: nowhere.json}
            expect:
              runs: {items: succeded}
        """,
    )
    done = bridge_command("test", "-c", str(config), str(cases))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert f"{cases}:2: cases[0].message: Field required" in lines, lines
    assert f"{cases}:3: cases[0].mesage: unknown key; did you mean `cases[0].message`?" in lines
    assert any(
        line.startswith(f"{cases}:7: cases[1].expect.runs.items: Input should be 'succeeded'")
        for line in lines
    ), lines
    # A body file that is missing is named with its line once the shape is right.
    cases.write_text("cases:\n  - name: x\n    message:\n      body_file: nowhere.json\n")
    done = bridge_command("test", "-c", str(config), str(cases))
    assert done.returncode == 1
    missing = tmp_path / "nowhere.json"
    assert f"{cases}:4: cases[0].message.body_file: no file {missing}" in done.stderr.splitlines()


def test_the_documented_cases_example_runs_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (ROOT / "docs" / "dev.md").read_text()
    (block,) = [
        b for b in re.findall(r"```yml\n(.*?)```", text, flags=re.S) if b.startswith("cases:")
    ]
    cases = tmp_path / "cases.yaml"
    cases.write_text(block)
    config = ROOT / "examples" / "newsletter" / "bridge.yaml"
    code = main(["test", "-c", str(config), str(cases)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1 passed, 0 failed" in out


def test_webhook_payloads_from_files_follow_the_providers_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = ROOT / "examples" / "db-changes"
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        textwrap.dedent(
            f"""\
            cases:
              - name: a Supabase insert is a typed db/users.insert for three handlers
                connector: supabase
                message: {{body_file: {example}/payloads/supabase-insert.json}}
                stubs: {{search-index: {{result: {{indexed: true}}}}}}
                expect:
                  count: 1
                  event: {{type: db/users.insert, data: {{op: insert, record: {{id: 7}}}}}}
                  handlers: [audit-log, welcome-new-user, search-index]
                  runs: {{audit-log: succeeded, search-index: {{status: succeeded, result: {{indexed: true}}}}}}
              - name: a Debezium update reaches the cache invalidation too
                connector: debezium
                message: {{body_file: {example}/payloads/debezium-update.json}}
                expect:
                  event: {{type: db/products.update}}
                  handlers: [audit-log, search-index, cache-invalidation]
              - name: a missing payload file is named
                connector: supabase
                message: {{body_file: nowhere.json}}
            """
        )
    )
    code = main(["test", "-c", str(example / "bridge.yaml"), str(cases)])
    err = capsys.readouterr().err
    assert code == 1 and "cases[2].message.body_file: no file" in err
    cases.write_text(cases.read_text().split("  - name: a missing")[0])
    code = main(["test", "-c", str(example / "bridge.yaml"), str(cases)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 passed, 0 failed" in out


async def count_batch(events: list[Event[Any]], ctx: Context) -> dict[str, int]:
    return {"size": len(events)}


FLOW_CONFIG = """\
version: 1
store: memory://
events:
  order/*: {schema: none}
handlers:
  - id: bulk
    on: order/placed
    type: python
    function: "tests.unit.test_casetest:count_batch"
    batch: {max_size: 100, timeout: 1h}
  - id: remind
    on: order/placed
    type: python
    function: "tests.unit.test_casetest:announce"
    cancel_on: [{event: order/paid, match: event.data.order}]
"""


def test_cases_run_batching_handlers_at_once_and_route_cancelling_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(FLOW_CONFIG)
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        textwrap.dedent(
            """\
            cases:
              - name: a batch of one runs without waiting for its timeout
                message: {body: {specversion: "1.0", id: o1, source: t, type: order/placed,
                                 data: {order: 1, items: []}}}
                expect:
                  handlers: [bulk, remind]
                  runs: {bulk: {status: succeeded, result: {size: 1}}, remind: succeeded}
              - name: a payment reaches the cancel_on companion
                message: {body: {specversion: "1.0", id: p1, source: t, type: order/paid,
                                 data: {order: 1}}}
                expect:
                  handlers: [remind/cancel]
                  runs: {remind/cancel: succeeded}
            """
        )
    )
    code = main(["test", "-c", str(config), str(cases)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 passed, 0 failed" in out
