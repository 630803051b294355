"""``bench.report``: each goal's figure in every round of its run, beside its verdict."""

from __future__ import annotations

import os
from typing import Any

from bench.common import SHORT_ROUNDS, Env, goal, throughput_result, wakeups
from bench.durable import added_each_run
from bench.report import each_round, issue_goals, wakeup_lines


def _doc(result: dict[str, Any], scenario: str = "ledger") -> dict[str, Any]:
    goals = [{**g, "scenario": scenario} for g in result["goals"]]
    return {"scenarios": {scenario: result}, "goals": goals}


def _ledger(sqlite: list[float], off: list[float]) -> dict[str, Any]:
    result = throughput_result(
        "events/s", {"sqlite": sqlite, "ledger_off": off}, [("sqlite", "ledger_off")]
    )
    ratio = result["ratios"]["sqlite/ledger_off"]
    result["goals"] = [goal("SQLite ledger / ledger off", ratio, ">=", 0.6, "sqlite/ledger_off")]
    return result


def test_each_round_pairs_the_nth_run_of_a_variant_with_the_nth_of_its_baseline() -> None:
    result = _ledger([550.0, 700.0, 600.0], [1000.0, 1000.0, 1200.0])
    assert result["ratio_rounds"]["sqlite/ledger_off"] == [0.55, 0.7, 0.5]
    # The goal reads the ratio of the medians, 600 / 1000: not a round's own ratio.
    assert result["ratios"]["sqlite/ledger_off"] == 0.6


def test_rounds_on_both_sides_of_the_target_are_marked_as_within_the_noise() -> None:
    doc = _doc(_ledger([550.0, 700.0, 600.0], [1000.0, 1000.0, 1200.0]))
    assert each_round(doc, doc["goals"][0]) == "± 0.5 to 0.7"
    table = issue_goals(doc)
    row = next(line for line in table if line.startswith("| SQLite ledger >= 0.6"))
    assert "| met | ± 0.5 to 0.7 |" in row


def test_rounds_all_on_one_side_are_not_marked_and_one_round_shows_none() -> None:
    doc = _doc(_ledger([500.0, 520.0, 510.0], [1000.0, 1000.0, 1000.0]))
    assert each_round(doc, doc["goals"][0]) == "0.5 to 0.52"
    row = next(line for line in issue_goals(doc) if line.startswith("| SQLite ledger >= 0.6"))
    assert "**not met** (short by 0.09" in row and "| 0.5 to 0.52 |" in row
    single = _doc(_ledger([500.0], [1000.0]))
    assert each_round(single, single["goals"][0]) == "-"


def test_a_latency_goal_carries_its_own_rounds_and_an_upper_target_is_read_the_other_way() -> None:
    def run(p99: float) -> dict[str, Any]:
        return {"handler": {"p99_ms": p99}}

    runs = {"bare": [run(0.5), run(0.4), run(0.6)], "postgres": [run(9.5), run(12.4), run(8.6)]}
    rounds = added_each_run(runs, "postgres")
    assert [round(r, 6) for r in rounds] == [9.0, 12.0, 8.0]
    line = goal("durable latency: added p99, PostgreSQL (ms)", 9.0, "<=", 10.0, rounds=rounds)
    doc = {"scenarios": {"durable_latency": {}}, "goals": [{**line, "scenario": "durable_latency"}]}
    assert each_round(doc, doc["goals"][0]) == "± 8 to 12"
    below = goal("durable latency: added p99, SQLite (ms)", 1.0, "<=", 5.0, rounds=[0.7, 1.2])
    assert each_round(doc, {**below, "scenario": "durable_latency"}) == "0.7 to 1.2"


def test_short_scenarios_run_at_least_nine_rounds_in_a_full_run_and_one_in_a_quick_one() -> None:
    assert Env(runs=3).rounds() == SHORT_ROUNDS == 9
    assert Env(runs=12).rounds() == 12  # more asked for: more
    assert Env(quick=True, runs=1).rounds() == 1


def test_the_host_wakeup_round_trip_is_measured_on_each_placement_and_leaves_affinity_as_it_was() -> (
    None
):
    before = os.sched_getaffinity(0)
    found = wakeups(trips=200, repeats=1)
    assert os.sched_getaffinity(0) == before
    if len(before) < 2:
        assert found == {}  # one core: nothing to compare
        return
    assert set(found) == {"across_cores", "one_core"}
    assert all(v["wall"] > 0 and v["cpu"] >= 0 for v in found.values())


def test_the_report_names_the_wakeup_round_trip_when_measured() -> None:
    measured = {"across_cores": {"wall": 65.0, "cpu": 44.5}, "one_core": {"wall": 6.8, "cpu": 6.6}}
    (line,) = wakeup_lines(measured)
    assert "65 µs across cores (44.5 µs of CPU), 6.8 µs on one core" in line
    assert wakeup_lines(None) == []  # results written before it was measured
