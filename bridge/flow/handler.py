"""The flow control of one handler: its admission controls, concurrency key, retry budget
and rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.flow.budget import Budgets, RetryBudget, SharedBudget
from bridge.flow.coalesce import Coalescer
from bridge.flow.controls import Admission, AdmissionEnv, wants_admission
from bridge.flow.keys import KeyedLimiter
from bridge.flow.rate import RateLimiter
from bridge.flow.slots import Slots
from bridge.templates import EVENT_ROOTS, Template, TemplateError, event_scope

if TYPE_CHECKING:
    from bridge.clock import Clock
    from bridge.events import Event
    from bridge.handling import HandlerConfig


@dataclass(slots=True, eq=False)
class HandlerFlow:
    """The flow control of one handler; the dispatcher calls it around runs and attempts.

    * ``flow.bind(store, env)`` once, then ``flow.admission``: the admission step
      (``bridge.flow.controls``) a run passes before its first attempt, when the
      handler has such controls. On a store that replicas share (PostgreSQL), the
      concurrency key, the waiting rate limit and the retry budget also hold among
      all of them (``SharedBudget``): a run
      takes a leased slot of its key in the store, and an attempt a place in the
      store's sliding window of the rate limit.
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
    controls: HandlerConfig | None = None
    handler_id: str = ""
    budget_name: str = ""
    _admission: Admission | None = None
    _bound: bool = False
    _global_keys: Slots | None = None
    _global_rate: Coalescer[None, bool] | None = None
    _env: AdmissionEnv | None = None

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
        if rate is not None and cfg.rate_limit is not None and cfg.rate_limit.mode == "skip":
            rate = None  # a skipping rate limit is an admission control
        controls = cfg if wants_admission(cfg) else None
        if rate is None and budget is None and keys is None and controls is None:
            return None
        spec = cfg.retry_budget
        name = f"budget\x1f{spec}" if isinstance(spec, str) else f"budget\x1f{cfg.id}\x1finline"
        return cls(rate, budget, keys, template, controls, cfg.id, name)

    def bind(self, store: Any, env: AdmissionEnv) -> None:
        """Build what needs the store, once: the admission step and, on a store that
        replicas share, the global concurrency keys and waiting rate limit."""
        if self._bound:
            return
        self._bound = True
        self._env = env
        if self.controls is not None:
            self._admission = Admission(self.controls, store, env)
        if not getattr(store, "shared", False):
            return
        if self.keys is not None:
            self._global_keys = Slots(
                self.handler_id,
                store,
                lambda: env.wall(),
                lambda seconds: env.clock.sleep(seconds),
                shared=True,
                limit=self.keys.limit,
                renew_every=10.0,
            )
        budget = self.budget
        if budget is not None and budget.shared is None:  # one per budget, handlers share it
            budget.shared = SharedBudget(
                self.budget_name, budget, store, lambda: env.wall(), env.clock
            )
        rate = self.rate
        if rate is not None:
            name = f"{self.handler_id}\x1frate"

            async def window(_: Hashable, asks: Sequence[None]) -> list[bool]:
                admitted = await store.flow_window(
                    name, "", env.wall(), rate.per, rate.count, len(asks)
                )
                return [i < admitted for i in range(len(asks))]

            self._global_rate = Coalescer(window)

    @property
    def admission(self) -> Admission | None:
        """The admission step (after ``bind``); None without its controls."""
        return self._admission

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
            slots = self._global_keys
            if slots is None:
                yield
                return
            holder = await slots.take(key, "wait")  # a place among every replica's
            if holder is None:  # pragma: no cover - "wait" always takes one
                raise RuntimeError("no concurrency slot")
            try:
                async with slots.kept(key, holder):
                    yield
            finally:
                await asyncio.shield(slots.release(key, holder))

    async def before_attempt(self, number: int) -> float:
        """Count or budget attempt ``number`` (1-based), then rate-limit it; seconds waited."""
        waited = 0.0
        budget = self.budget
        if budget is not None:
            shared = budget.shared
            if number == 1:
                budget.record_first_attempt()
                if shared is not None:
                    shared.record_first_attempt()
            else:
                waited += await budget.acquire_retry()
                if shared is not None:
                    waited += await shared.acquire_retry()
        if self.rate is not None:
            waited += await self.rate.acquire()
            if self._global_rate is not None and self._env is not None:
                waited += await self._global_wait(self.rate, self._global_rate, self._env)
        return waited

    @staticmethod
    async def _global_wait(
        rate: RateLimiter, window: Coalescer[None, bool], env: AdmissionEnv
    ) -> float:
        """Wait until the replicas' shared window admits the attempt; seconds waited."""
        clock = env.clock
        started = clock.time()
        while not await window.ask("", None):
            await clock.sleep(rate.per / rate.count)
        return clock.time() - started
