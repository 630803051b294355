"""The engine's clock: monotonic time and a sleep.

Retries, timeouts' bookkeeping and flow control (rate limits, retry budgets) all
read time through one ``Clock``, so tests can pass a clock that does not really
sleep, or one they move by hand.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time and a sleep on it; tests pass one that does not really sleep."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def time(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
