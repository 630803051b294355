"""The flow control of one handler: its admission controls, concurrency key, retry budget
and rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.flow.budget import Budgets, RetryBudget
from bridge.flow.controls import Admission, AdmissionEnv, wants_admission
from bridge.flow.keys import KeyedLimiter
from bridge.flow.rate import RateLimiter
from bridge.templates import EVENT_ROOTS, Template, TemplateError, event_scope

if TYPE_CHECKING:
    from bridge.clock import Clock
    from bridge.events import Event
    from bridge.handling import HandlerConfig


@dataclass(slots=True, eq=False)
class HandlerFlow:
    """The flow control of one handler; the dispatcher calls it around runs and attempts.

    * ``flow.admission(store, env)``: the admission step (``bridge.flow.controls``) a
      run passes before its first attempt, when the handler has such controls.
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
    _admission: Admission | None = None

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
        return cls(rate, budget, keys, template, controls)

    def admission(self, store: Any, env: AdmissionEnv) -> Admission | None:
        """The handler's admission step on ``store``, built once; None without controls."""
        if self.controls is None:
            return None
        if self._admission is None:
            self._admission = Admission(self.controls, store, env)
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
