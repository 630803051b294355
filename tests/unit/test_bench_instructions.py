"""``bench.instructions``: its figures from counts (the counting itself needs valgrind and
runs in ``make bench-count``, not in the suite)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.instructions import _COLLECTED, _totals, report


def test_ratios_are_of_rates_so_the_inverse_of_instructions_and_the_change_is_per_event() -> None:
    found = {
        "this": {"bare": [200.0], "ledger_off": [300.0, 320.0, 310.0], "sqlite": [500.0]},
        "base": {"bare": [200.0], "ledger_off": [330.0], "sqlite": [550.0]},
    }
    args = argparse.Namespace(events=3000, runs=3, base="HEAD~1", out=Path("."))
    out = report(found, args, 1.0)
    assert out["instructions_per_event"]["this"]["ledger_off"] == 310.0  # the median
    # Fewer instructions an event is more events a second: ledger off / bare = 200 / 310.
    assert abs(out["ratios"]["this"]["ledger_off/bare"] - 200 / 310) < 1e-9
    assert abs(out["ratios"]["this"]["sqlite/ledger_off"] - 310 / 500) < 1e-9
    assert out["change"] == {"bare": 0.0, "ledger_off": -20.0, "sqlite": -50.0}


def test_the_count_is_read_from_callgrinds_summary() -> None:
    stderr = "==1== Events    : Ir\n==1== Collected : 8844967764\n==1==\n==1== I   refs: 8,844\n"
    found = _COLLECTED.search(stderr)
    assert found is not None and int(found.group(1)) == 8844967764


def test_a_webhook_count_is_read_from_the_totals_of_a_dump_taken_while_counting() -> None:
    # A dump taken with ``callgrind_control -d`` after ``--instr-atstart=no``: its summary
    # line holds what was counted before counting was on (nothing), its totals the rest.
    dump = "events: Ir\nsummary: 0\nfn=(1) main\n0 12\ntotals: 868139598\n"
    assert _totals(dump) == 868139598
    assert _totals("events: Ir\nsummary: 0\n") == 0
