"""Flow control for handler runs: retry budgets, rate limits, concurrency per key.

Three asyncio primitives, each on an injectable clock (the dispatcher's
``Clock``: ``time()`` and ``async sleep()``), so tests drive time by hand:

* ``RetryBudget``: retries may be at most ``ratio`` of first attempts over a
  sliding ``window`` (plus a floor of ``min_per_second``). A retry beyond the
  budget is *delayed* until the budget has room again, never dropped. One budget
  may be shared by several handlers that call the same downstream
  (``Budgets``, from the top-level ``retry_budgets``).
* ``RateLimiter``: at most ``count`` admissions in any window of length ``per``
  (a sliding log of the last ``count`` admission times). Unlike a token bucket,
  which lets through up to ``2 * count - 1`` in some windows, this never exceeds
  ``count`` in any window, so a downstream that enforces "N per period" never
  sees more.
* ``KeyedLimiter``: at most ``limit`` holders per key at once.

Every waiter queues FIFO; nothing polls (the head of a queue sleeps exactly as
long as it must); a cancelled waiter consumes nothing and passes its turn on.
``HandlerFlow`` bundles the three for one handler, built from its config.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Hashable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from bridge.duration import Duration
from bridge.templates import EVENT_ROOTS, Template, TemplateError, event_scope

if TYPE_CHECKING:
    from bridge.events import Event
    from bridge.handling import HandlerConfig


# --------------------------------------------------------------------------- config


class RateLimit(BaseModel):
    """At most ``count`` attempts of a handler start in any window of ``per``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1, le=1_000_000, description="Attempts allowed per period.")
    per: Duration = Field(gt=0, description="The period, e.g. `1s`, `1m`.")


class RetryBudgetConfig(BaseModel):
    """Retries allowed as a share of first attempts; retries beyond it wait."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(
        0.2, ge=0.0, le=100.0, description="Retries allowed per first attempt in the window."
    )
    window: Duration = Field(10.0, gt=0, description="The sliding window the counts cover.")
    min_per_second: float = Field(
        1.0,
        ge=0.0,
        description="Retries per second allowed even without first attempts (low traffic).",
    )


# --------------------------------------------------------------------------- clock


class Clock(Protocol):
    """Monotonic time and a sleep; the dispatcher's clock fits."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: ``time.monotonic`` and ``asyncio.sleep``."""

    def time(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# --------------------------------------------------------------------------- FIFO gate


class _FifoGate:
    """A FIFO queue in front of a resource that frees up with time.

    Subclasses say how long until one unit can be taken (``_wait``) and take it
    (``_take``). Only the head of the queue sleeps; the others wait on a future
    that the head resolves when it leaves, so there is no polling and no
    thundering herd when the resource frees up.
    """

    def __init__(self, clock: Clock | None) -> None:
        self._clock: Clock = clock or MonotonicClock()
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


# --------------------------------------------------------------------------- rate limit


class RateLimiter(_FifoGate):
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


# --------------------------------------------------------------------------- retry budget


class RetryBudget(_FifoGate):
    """Retries at most ``ratio`` of first attempts over a sliding window, delayed not dropped.

    A retry is admitted while the retries already admitted in the window are
    fewer than ``ratio * first_attempts + min_retries_per_second * window``, or
    when there is no retry in the window at all (so retries always progress,
    at worst one per window). Counts are kept in ten slices of the window, so
    memory is constant; a slice leaves the window whole.
    """

    _SLICES = 10

    def __init__(
        self,
        ratio: float,
        window: float,
        min_retries_per_second: float = 1.0,
        *,
        clock: Clock | None = None,
    ) -> None:
        if ratio < 0 or window <= 0 or min_retries_per_second < 0:
            raise ValueError("a retry budget needs ratio >= 0, window > 0, min_per_second >= 0")
        super().__init__(clock)
        self.ratio = ratio
        self.window = window
        self.reserve = min_retries_per_second * window
        self._slice = window / self._SLICES
        # [slice index, first attempts, retries], oldest first.
        self._slices: deque[list[int]] = deque()
        self._firsts = 0
        self._retries = 0

    @classmethod
    def from_config(cls, cfg: RetryBudgetConfig, clock: Clock | None = None) -> RetryBudget:
        return cls(cfg.ratio, cfg.window, cfg.min_per_second, clock=clock)

    def _expires(self, index: int) -> float:
        return (index + 1) * self._slice + self.window

    def _prune(self, now: float) -> None:
        slices = self._slices
        while slices and self._expires(slices[0][0]) <= now:
            _, firsts, retries = slices.popleft()
            self._firsts -= firsts
            self._retries -= retries

    def _current(self, now: float) -> list[int]:
        index = math.floor(now / self._slice)
        slices = self._slices
        if not slices or slices[-1][0] != index:
            slices.append([index, 0, 0])
        return slices[-1]

    def _fits(self, firsts: int, retries: int) -> bool:
        return retries == 0 or retries + 1 <= self.ratio * firsts + self.reserve

    def _wait(self, now: float) -> float:
        self._prune(now)
        firsts, retries = self._firsts, self._retries
        if self._fits(firsts, retries):
            return 0.0
        for index, f, r in self._slices:
            firsts -= f
            retries -= r
            if self._fits(firsts, retries):
                return max(self._expires(index) - now, 0.0)
        raise RuntimeError("unreachable: an empty window always fits")  # pragma: no cover

    def _take(self, now: float) -> None:
        self._current(now)[2] += 1
        self._retries += 1

    def record_first_attempt(self) -> None:
        """Count a first attempt: it grows the budget (and may wake a waiting retry)."""
        now = self._clock.time()
        self._prune(now)
        self._current(now)[1] += 1
        self._firsts += 1
        if self._queue:
            self._poke()

    def retry_delay(self) -> float:
        """Seconds until a retry would be admitted, if no first attempt arrives meanwhile.

        Takes nothing. With retries queued it is the wait of the first of them, a
        lower bound for a new one: use it to decide whether to park a retry.
        """
        return self._wait(self._clock.time())

    def try_retry(self) -> bool:
        """Admit and count a retry if the budget has room now and none is queued."""
        return self._try()

    async def acquire_retry(self) -> float:
        """Wait until the budget admits a retry, FIFO; count it; return the seconds waited.

        A caller cancelled while waiting is not counted and lets the next one go.
        """
        return await self._acquire()

    @property
    def counts(self) -> tuple[int, int]:
        """(first attempts, retries) in the current window."""
        self._prune(self._clock.time())
        return self._firsts, self._retries


class Budgets:
    """Retry budgets by name, shared by the handlers that name them."""

    def __init__(
        self, configs: Mapping[str, RetryBudgetConfig], clock: Clock | None = None
    ) -> None:
        self._clock = clock
        self._shared = {name: RetryBudget.from_config(cfg, clock) for name, cfg in configs.items()}

    def __getitem__(self, name: str) -> RetryBudget:
        return self._shared[name]

    def __contains__(self, name: object) -> bool:
        return name in self._shared

    def resolve(self, spec: str | RetryBudgetConfig | None) -> RetryBudget | None:
        """The shared budget ``spec`` names, a private one built from it, or None.

        Raises:
            KeyError: ``spec`` names no budget (``validate`` reports this earlier).
        """
        if spec is None:
            return None
        if isinstance(spec, str):
            if spec not in self._shared:
                known = ", ".join(sorted(self._shared)) or "none defined"
                raise KeyError(f"unknown retry budget {spec!r} (known: {known})")
            return self._shared[spec]
        return RetryBudget.from_config(spec, self._clock)


# --------------------------------------------------------------------------- keyed limit


class _KeySlot:
    __slots__ = ("holders", "waiters")

    def __init__(self) -> None:
        self.holders = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class KeyedLimiter:
    """At most ``limit`` holders per key at once, FIFO per key.

    A key's state exists only while it is held or awaited, so the map never
    grows past the keys in use. A released place passes straight to the next
    waiter of that key; a waiter cancelled after it was handed a place passes
    it on in turn.
    """

    def __init__(self, limit: int = 1) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._slots: dict[Hashable, _KeySlot] = {}

    def __len__(self) -> int:
        """Keys currently held or awaited."""
        return len(self._slots)

    def holders(self, key: Hashable) -> int:
        slot = self._slots.get(key)
        return slot.holders if slot is not None else 0

    async def acquire(self, key: Hashable) -> None:
        """Wait for a place under ``key``; pair with ``release(key)``."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _KeySlot()
        if slot.holders < self.limit and not slot.waiters:
            slot.holders += 1
            return
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slot.waiters.append(me)
        try:
            await me
        except asyncio.CancelledError:
            if me.done() and not me.cancelled():
                self.release(key)  # handed a place just as we were cancelled
            else:
                # A release may already have skipped (and dropped) our cancelled future.
                if me in slot.waiters:
                    slot.waiters.remove(me)
                if not slot.holders and not slot.waiters and self._slots.get(key) is slot:
                    del self._slots[key]
            raise

    def release(self, key: Hashable) -> None:
        """Give back a place under ``key``: to its next waiter, else free it.

        Raises:
            RuntimeError: ``key`` is not held.
        """
        slot = self._slots.get(key)
        if slot is None or slot.holders == 0:
            raise RuntimeError(f"release of a key that is not held: {key!r}")
        while slot.waiters:
            nxt = slot.waiters.popleft()
            if not nxt.done():
                nxt.set_result(None)  # the place passes on; holders unchanged
                return
        slot.holders -= 1
        if slot.holders == 0:
            del self._slots[key]

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """``async with limiter.hold(key):`` holds a place for the block."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)


# --------------------------------------------------------------------------- per handler


@dataclass(slots=True, eq=False)
class HandlerFlow:
    """The flow control of one handler; the dispatcher calls it around runs and attempts.

    * ``async with flow.hold(event):`` around a whole run (all its attempts and
      backoffs): runs with the same key never overlap.
    * ``await flow.before_attempt(number)`` before each attempt, outside the
      handler's concurrency semaphore: counts a first attempt, or waits for the
      retry budget; then waits for the rate limit.
    """

    rate: RateLimiter | None = None
    budget: RetryBudget | None = None
    keys: KeyedLimiter | None = None
    key_template: Template | None = None

    @classmethod
    def from_config(
        cls, cfg: HandlerConfig, budgets: Budgets, clock: Clock | None = None
    ) -> HandlerFlow | None:
        """The flow control ``cfg`` asks for, or None when it asks for none."""
        rate = RateLimiter.from_config(cfg.rate_limit, clock) if cfg.rate_limit else None
        budget = budgets.resolve(cfg.retry_budget)
        keys = template = None
        if cfg.concurrency_key is not None:
            keys = KeyedLimiter(cfg.concurrency_per_key)
            template = Template(cfg.concurrency_key, EVENT_ROOTS)
        if rate is None and budget is None and keys is None:
            return None
        return cls(rate, budget, keys, template)

    def key(self, event: Event[Any]) -> str | None:
        """The concurrency key of ``event``; None (no key limit) when a field is missing."""
        if self.key_template is None:
            return None
        try:
            return self.key_template.render_str(event_scope(event))
        except TemplateError:
            return None

    @asynccontextmanager
    async def hold(self, event: Event[Any]) -> AsyncIterator[None]:
        """Hold the event's concurrency key for the block (nothing when it has none)."""
        key = self.key(event) if self.keys is not None else None
        if self.keys is None or key is None:
            yield
            return
        async with self.keys.hold(key):
            yield

    async def before_attempt(self, number: int) -> float:
        """Count or budget attempt ``number`` (1-based), then rate-limit it; seconds waited."""
        waited = 0.0
        if self.budget is not None:
            if number == 1:
                self.budget.record_first_attempt()
            else:
                waited += await self.budget.acquire_retry()
        if self.rate is not None:
            waited += await self.rate.acquire()
        return waited
