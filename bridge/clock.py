"""The engine's clock: monotonic time and a sleep.

Retries, timeouts' bookkeeping and flow control (rate limits, retry budgets) all
read time through one ``Clock``, so tests can pass a clock that does not really
sleep, or one they move by hand.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time and a sleep on it; tests pass one that does not really sleep."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    # ``time.monotonic`` itself, not a method calling it: the engine reads it per run.
    time = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock moved by hand (tests, ``bridge test``): ``sleep`` waits until ``advance``
    moves time past its end.

    ``time()`` serves as both the engine's clock and the wall clock. ``advance`` wakes
    the sleepers due in order, letting the tasks they wake run between them.
    """

    def __init__(self, start: float = 0.0, *, settle_rounds: int = 50) -> None:
        self.now = start
        self.settle_rounds = settle_rounds
        self._order = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    def next_due(self) -> float | None:
        """When the earliest sleeper wakes; None when nothing sleeps."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self) -> None:
        """Let every task that can run, run (a fixed number of loop turns)."""
        for _ in range(self.settle_rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper at its own due time."""
        target = self.now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, due)
            if not future.done():
                future.set_result(None)
                await self.settle()
        self.now = target
        await self.settle()
