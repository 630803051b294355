"""The record of one attempt of a run, shared by dead letters, parked runs and the history."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Attempt:
    """One attempt of a run: when it started, how long it took, how it failed."""

    number: int
    started_at: float
    duration: float
    error: str | None = None
