"""The benchmark suite in quick mode: every scenario runs end to end against the real
brokers and writes its report. Figures from a quick run mean nothing, so this test
checks shape and counts, never a rate or a duration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.integration

SCENARIOS = {
    "ledger",
    "replicas",
    "kafka",
    "rabbitmq",
    "redis",
    "sqs",
    "webhook",
    "latency",
    "tracing",
    "memory",
    "width",
    "soak",
    "nats",
    "durable_latency",
    "threads",
}


@pytest.mark.timeout(400)
def test_quick_suite_reports_every_scenario(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=390,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.png").stat().st_size > 0
    table = (tmp_path / "latest.md").read_text()

    scenarios = report["scenarios"]
    assert set(scenarios) == SCENARIOS
    failed = {name: s["error"] for name, s in scenarios.items() if "error" in s}
    assert not failed, failed
    for name in SCENARIOS:
        assert f"## {name}:" in table
    assert report["machine"]["cpus"] >= 1

    # Every throughput variant ran once and moved messages (reference variants such as
    # the SQLite ledger run in full runs only).
    for name, variants in (
        ("ledger", {"bare", "ledger_off", "memory", "sqlite", "postgres", "sqlite_random"}),
        ("kafka", {"raw", "bridge", "faststream", "faststream_autocommit", "bridge_sqlite"}),
        ("rabbitmq", {"raw", "bridge", "faststream"}),
        ("sqs", {"raw", "bridge"}),
        ("redis", {"raw", "bridge", "faststream"}),
        ("tracing", {"off", "sampled_10pct", "sampled_100pct"}),
        ("width", {f"{side}_w{w}" for side in ("bare", "bridge") for w in (1, 4, 16, 64)}),
    ):
        got = scenarios[name]["variants"]
        assert set(got) == variants, name
        assert all(v["runs"] == 1 and v["median"] > 0 for v in got.values()), name
        assert set(scenarios[name]["cpu_us_per_msg"]) == variants, name
        assert scenarios[name]["ratios"], name
        # One round: each ratio within it, the report's "each round" column.
        rounds = scenarios[name]["ratio_rounds"]
        assert set(rounds) == set(scenarios[name]["ratios"]), name
        assert all(len(r) == 1 and r[0] > 0 for r in rounds.values()), name

    tracing = scenarios["tracing"]
    assert tracing["spans_exported"]["sampled_100pct"] == tracing["spans_expected_100pct"] > 0
    for variant in scenarios["threads"]["variants"].values():
        assert variant["hand_offs"] > 0 and variant["p50_ms"] >= 0
    latency = scenarios["latency"]["variants"]
    assert all(v["runs"][0]["samples"] > 0 for v in latency.values())
    webhook = scenarios["webhook"]
    assert all(v["not_202"] == 0 for v in webhook["variants"].values())
    assert set(webhook["max_rps"]) == {"bare_max_rps", "bridge_max_rps"}
    assert all(r["inbox_rows"] > 0 for r in webhook["runs"]["bridge"])
    assert set(scenarios["ledger"]["round_trips_per_event"]) == {
        "sqlite",
        "postgres",
        "sqlite_random",
    }
    replicas = scenarios["replicas"]
    assert replicas["lost"] == replicas["duplicated"] == 0
    assert all(min(r["runs_per_replica"]) > 0 for r in replicas["runs"])
    assert "## Issue 18: every goal and its figure" in table
    assert "| goal | measured | target | verdict | each round | same ratio from CPU |" in table
    durable = scenarios["durable_latency"]["variants"]
    assert set(durable) == {"bare", "ledger_off", "sqlite", "postgres"}
    assert all(r["handler"]["samples"] > 0 for v in durable.values() for r in v["runs"])
    assert all(r["settled"]["samples"] > 0 for v in durable.values() for r in v["runs"])
    memory = scenarios["memory"]
    assert memory["overload"]["sent"] > memory["overload"]["handled_events"] > 0
    assert len(memory["samples"]) >= 8

    goals = {g["scenario"] for g in report["goals"]}
    assert goals >= SCENARIOS - {"width", "threads"}
