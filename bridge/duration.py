"""Durations in config: ``"250ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"1d"`` or a number of seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$"
"""What ``parse_duration`` accepts as a string (also the JSON Schema's ``pattern``)."""
_PATTERN = re.compile(DURATION_PATTERN)


def parse_duration(value: Any) -> float:
    """Return the duration in seconds.

    Raises:
        ValueError: the value is not a non-negative number or ``<number><unit>``.
    """
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '10s'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError(f"invalid duration {value!r}: use e.g. 250ms, 10s, 5m, 1h")


DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": DURATION_PATTERN},
    ],
    "examples": ["250ms", "10s", "5m", "1h"],
}
"""The JSON Schema of a ``Duration``: seconds as a number, or a string with a unit."""

Duration = Annotated[
    float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_SCHEMA, mode="validation")
]
