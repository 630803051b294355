"""``bench.ledger_shape``: both ledger shapes store every success they are timed on."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.ledger_shape import HANDLERS, KEYS, SHAPES, measure


@pytest.mark.parametrize("keys", list(KEYS))
def test_both_shapes_store_every_success_of_every_event(keys: str, tmp_path: Path) -> None:
    # 70 events: two full write runs of 32 and a short one, lookups of 16 and of 6.
    result = measure(70, keys, 1, tmp_path)
    assert result["successes_stored"] == {
        "row_per_handler": 70 * len(HANDLERS),
        "row_per_key": 70 * len(HANDLERS),
    }
    cpu = result["cpu_us_per_event"]
    assert cpu["row_per_handler"] > 0 and cpu["row_per_key"] > 0
    assert result["row_per_key/row_per_handler"] == cpu["row_per_key"] / cpu["row_per_handler"]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_key_already_in_the_ledger_is_found_by_the_lookup(shape: str, tmp_path: Path) -> None:
    # The timed lookups read the table the writes fill: a second pass over the same keys
    # finds them (and the benchmark refuses to time lookups that find something).
    keys = KEYS["sequential"](0, 40)
    SHAPES[shape](tmp_path / "ledger.db", keys)
    with pytest.raises(AssertionError, match="found in the ledger"):
        SHAPES[shape](tmp_path / "ledger.db", keys)
