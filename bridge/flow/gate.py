"""A FIFO queue in front of a resource that frees up with time.

The base of ``RateLimiter`` and ``RetryBudget``: only the head of the queue
sleeps, on the engine's clock; a cancelled waiter passes its turn on.
"""

from __future__ import annotations

import asyncio
from collections import deque

from bridge.clock import Clock, RealClock


class FifoGate:
    """A FIFO queue in front of a resource that frees up with time.

    Subclasses say how long until one unit can be taken (``_wait``) and take it
    (``_take``). Only the head of the queue sleeps; the others wait on a future
    that the head resolves when it leaves, so there is no polling and no
    thundering herd when the resource frees up.
    """

    def __init__(self, clock: Clock | None) -> None:
        self._clock: Clock = clock or RealClock()
        self._queue: deque[asyncio.Future[None]] = deque()
        self._wake: asyncio.Future[None] | None = None

    def _wait(self, now: float) -> float:
        raise NotImplementedError

    def _take(self, now: float) -> None:
        raise NotImplementedError

    @property
    def waiting(self) -> int:
        """Callers queued in ``_acquire`` right now."""
        return len(self._queue)

    def _try(self) -> bool:
        now = self._clock.time()
        if self._queue or self._wait(now) > 0:
            return False
        self._take(now)
        return True

    async def _acquire(self) -> float:
        clock = self._clock
        started = clock.time()
        if not self._queue and self._wait(started) <= 0:
            self._take(started)
            return 0.0
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(me)
        try:
            if self._queue[0] is not me:
                await me  # resolved by the waiter ahead of us when it leaves the head
            while (delay := self._wait(clock.time())) > 0:
                await self._pause(delay)
            now = clock.time()
            self._take(now)
            return now - started
        finally:
            head = self._queue[0] is me
            self._queue.remove(me)
            if head and self._queue:
                nxt = self._queue[0]
                if not nxt.done():
                    nxt.set_result(None)

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay`` on the clock, or less if ``_poke`` is called."""
        wake = self._wake = asyncio.get_running_loop().create_future()
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        try:
            await asyncio.wait((sleeper, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            self._wake = None

    def _poke(self) -> None:
        """Wake the head waiter early: the resource may have grown."""
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
