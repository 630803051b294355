"""Retry budgets: retries as a share of first attempts, delayed rather than dropped."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from bridge.clock import Clock
from bridge.flow.coalesce import Coalescer
from bridge.flow.gate import FifoGate
from bridge.limits import RetryBudgetConfig


class RetryBudget(FifoGate):
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
        self.shared: SharedBudget | None = None  # set when replicas share the store

    @classmethod
    def from_config(cls, cfg: RetryBudgetConfig, clock: Clock | None = None) -> RetryBudget:
        """The budget ``cfg`` describes, on ``clock``."""
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


class SharedBudget:
    """A retry budget held among the replicas that share a store (PostgreSQL).

    First attempts are counted here and sent with the next retry's request, so they
    cost no store call of their own; a replica that never retries never sends its
    first attempts, which makes the others' budget smaller, never larger. Retries
    waiting in this process share one store call (``FlowState.flow_budget``); a retry
    the shared budget refuses asks again a slice of the window later.
    """

    def __init__(
        self,
        name: str,
        budget: RetryBudget,
        store: Any,
        wall: Callable[[], float],
        clock: Clock,
    ) -> None:
        self.name = name
        self.budget = budget
        self.store = store
        self.wall = wall
        self.clock = clock
        self.unsent = 0
        self._asks: Coalescer[None, bool] = Coalescer(self._call)

    def record_first_attempt(self) -> None:
        """Count a first attempt; it reaches the store with the next retry's request."""
        self.unsent += 1

    async def acquire_retry(self) -> float:
        """Wait until the shared budget admits a retry; the seconds waited."""
        started = self.clock.time()
        while not await self._asks.ask("", None):
            await self.clock.sleep(self.budget.window / RetryBudget._SLICES)
        return self.clock.time() - started

    async def _call(self, _: Hashable, asks: Sequence[None]) -> list[bool]:
        firsts, self.unsent = self.unsent, 0
        budget = self.budget
        try:
            admitted = await self.store.flow_budget(
                self.name,
                self.wall(),
                budget.window,
                budget.ratio,
                budget.reserve,
                firsts,
                len(asks),
            )
        except BaseException:
            self.unsent += firsts  # not counted: send them next time
            raise
        return [i < admitted for i in range(len(asks))]
