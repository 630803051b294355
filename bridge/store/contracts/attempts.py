"""The record of one attempt of a run, shared by dead letters, parked runs and the history."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Attempt:
    """One attempt of a run: when it started, how long it took, how it failed.

    ``traceback`` is the formatted stack trace of the failure when there is one
    (a handler's exception, an internal error), at most the last 50 frames and
    8 KB (the end is kept: the innermost frames and the exception line).
    """

    number: int
    started_at: float
    duration: float
    error: str | None = None
    traceback: str | None = None
