"""A handler's concurrency slots handed out by priority: higher first, FIFO among equals.

The run's priority is read from ``RUN_PRIORITY``, which the admission step sets for
the run's task before its attempts start, so the dispatcher's ``async with
limiter:`` needs no change.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from contextvars import ContextVar
from types import TracebackType

RUN_PRIORITY: ContextVar[int] = ContextVar("bridge_run_priority", default=0)


class PriorityLimiter:
    """At most ``limit`` holders; a freed slot goes to the highest-priority waiter.

    Used as ``async with limiter:`` like an ``asyncio.Semaphore``.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.holders = 0
        self._order = itertools.count()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []

    @property
    def waiting(self) -> int:
        """Callers queued now."""
        return sum(1 for *_, f in self._waiters if not f.done())

    async def acquire(self) -> None:
        """Wait for a slot: the highest ``RUN_PRIORITY`` first, then arrival order."""
        if self.holders < self.limit and not self._waiters:
            self.holders += 1
            return
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-RUN_PRIORITY.get(), next(self._order), me))
        try:
            await me
        except asyncio.CancelledError:
            if me.done() and not me.cancelled():
                self.release()  # handed a slot as we were cancelled: pass it on
            raise

    def release(self) -> None:
        """Give a slot back: to the best waiter, else free it."""
        while self._waiters:
            *_, nxt = heapq.heappop(self._waiters)
            if not nxt.done():
                nxt.set_result(None)  # the slot passes on; holders unchanged
                return
        self.holders -= 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
