"""Cron positions: the last tick fired per schedule, advanced once across replicas."""

from __future__ import annotations

from typing import Protocol


class CronPositions(Protocol):
    """The last tick of each schedule."""

    async def cron_last(self, name: str) -> float | None:
        """The last tick (epoch seconds) fired for this schedule."""

    async def cron_advance(self, name: str, tick: float) -> bool:
        """Move the schedule to ``tick`` if it is later than the last one; True if moved."""
