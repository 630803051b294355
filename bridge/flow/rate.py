"""A sliding-log rate limit: at most ``count`` admissions in any window of ``per``."""

from __future__ import annotations

from collections import deque

from bridge.clock import Clock
from bridge.flow.gate import FifoGate
from bridge.limits import RateLimit


class RateLimiter(FifoGate):
    """At most ``count`` admissions in any window of ``per`` seconds, FIFO.

    Memory is bounded by ``count`` (the last admission times).
    """

    def __init__(self, count: int, per: float, *, clock: Clock | None = None) -> None:
        if count < 1 or per <= 0:
            raise ValueError("a rate limit needs count >= 1 and per > 0")
        super().__init__(clock)
        self.count = count
        self.per = per
        self._log: deque[float] = deque(maxlen=count)

    @classmethod
    def from_config(cls, cfg: RateLimit, clock: Clock | None = None) -> RateLimiter:
        """The limiter a handler's ``rate_limit`` asks for."""
        return cls(cfg.count, cfg.per, clock=clock)

    def _wait(self, now: float) -> float:
        log = self._log
        if len(log) < self.count:
            return 0.0
        return max(0.0, log[0] + self.per - now)

    def _take(self, now: float) -> None:
        self._log.append(now)  # maxlen drops the oldest

    def delay(self) -> float:
        """Seconds a new ``acquire()`` would wait now, behind the callers already queued.

        Takes nothing. Exact unless a queued caller is cancelled meanwhile.
        """
        now = self._clock.time()
        if not self._queue:
            return self._wait(now)
        times = list(self._log)
        at = now
        for _ in range(len(self._queue) + 1):
            at = now if len(times) < self.count else max(now, times[-self.count] + self.per)
            times.append(at)
        return at - now

    def try_acquire(self) -> bool:
        """Take an admission if one is free now and nobody is queued; never waits."""
        return self._try()

    async def acquire(self) -> float:
        """Wait for an admission, FIFO; return the seconds waited.

        A caller cancelled while waiting takes nothing and lets the next one go.
        """
        return await self._acquire()
