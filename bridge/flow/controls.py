"""The admission step: what happens to a run before its first attempt starts.

In Inngest's order: a skipping ``rate_limit``, then ``debounce``, then
``idempotency`` and ``singleton``, then ``throttle``; the concurrency key and
the ``concurrency`` slots (by ``priority``) come after, around the attempts. A
run either starts (``start()`` is awaited, with its priority set) or ends as a
``Refusal``: ``skipped`` (rate limit, singleton, idempotency), ``debounced`` (a
later event for its key superseded it) or ``cancelled`` (a newer run of its
singleton key took over). Each refusal is recorded in the run history with its
reason and counted in ``bridge_runs_total{outcome}``; a run that waits (debounce,
throttle) is recorded meanwhile as ``debouncing`` / ``throttled`` with the time
it is due.

State lives in the store (``FlowState``): on PostgreSQL the controls hold across
replicas. Requests for one key that arrive together share one store call
(``Coalescer``), so a busy key costs a fraction of a round trip per run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from bridge.flow.coalesce import Coalescer
from bridge.flow.expr import KeyExpr
from bridge.flow.priority import RUN_PRIORITY
from bridge.flow.slots import Slots
from bridge.store.contracts.history import RunRecord

if TYPE_CHECKING:
    from bridge.clock import Clock
    from bridge.events import Event
    from bridge.handling import HandlerConfig
    from bridge.history import HistoryRecorder
    from bridge.metrics import Metrics
    from bridge.store.contracts.flow import FlowState

T = TypeVar("T")

ADMITTED_AT: ContextVar[float | None] = ContextVar("bridge_admitted_at", default=None)
"""When (wall clock) the limits let the current run start: the start time its throttle
gave it, else the time its skipping rate limit admitted it; None without either. The
run starts then, or later by the event loop's delay in waking it."""


class AdmissionEnv(Protocol):
    """What the admission step uses of the dispatcher's environment."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def history(self) -> HistoryRecorder | None: ...

    @property
    def wall(self) -> Callable[[], float]: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """A run that does not start: its final status and why."""

    status: Literal["skipped", "debounced", "cancelled"]
    reason: str


@dataclass(frozen=True, slots=True)
class Queued:
    """A run that waits longer than ``QUEUE_AFTER``: park it in the store, due at ``due``
    (a little ahead of its start time), and settle its message. ``state`` says where its
    admission resumes (``admit(..., state)``); ``priority`` orders it among due runs."""

    due: float
    state: dict[str, Any]
    reason: str
    priority: int = 0


class QueuedRun(Exception):
    """Raised inside the admission step to leave it with a ``Queued``."""

    def __init__(self, queued: Queued) -> None:
        super().__init__(queued.reason)
        self.queued = queued


QUEUE_AFTER: ContextVar[float | None] = ContextVar("bridge_queue_after", default=None)
"""A run whose throttle start time or debounce due time is more than this many seconds
away is queued in the store (parked); a nearer one waits in process. The dispatcher
sets the connector's inline limit (``inline_retry_limit``, as for retries); None:
never queued."""
QUEUE_LEAD = 1.5
"""A queued run is parked due this much before its start time, so that a replica's
scheduler (polling every second) claims it in time; it then waits in process."""
LATE = 2.0
"""A queued throttled run claimed this much after its start time (its replica died, or
the scheduler fell behind) takes a new start time rather than bunch up with later ones."""


def wants_admission(cfg: HandlerConfig) -> bool:
    """``cfg`` asks for a control of the admission step."""
    rate = cfg.rate_limit is not None and cfg.rate_limit.mode == "skip"
    return rate or any((cfg.debounce, cfg.singleton, cfg.throttle, cfg.priority, cfg.idempotency))


class Admission:
    """The admission controls of one handler, on a ``FlowState`` store.

    Args:
        cfg: the handler's config.
        store: the flow state (the bridge's store).
        env: metrics, clock, history and wall clock (read at each run: settable).
    """

    def __init__(self, cfg: HandlerConfig, store: FlowState, env: AdmissionEnv) -> None:
        self.handler = cfg.id
        self.cfg = cfg
        self.store = store
        self.env = env
        self.labels = (("handler", cfg.id),)
        rate = cfg.rate_limit if cfg.rate_limit and cfg.rate_limit.mode == "skip" else None
        self.rate = rate
        self.rate_key = KeyExpr(rate.key if rate else None)
        self.debounce_key = KeyExpr(cfg.debounce.key if cfg.debounce else None)
        self.singleton_key = KeyExpr(cfg.singleton.key if cfg.singleton else None)
        self.throttle_key = KeyExpr(cfg.throttle.key if cfg.throttle else None)
        self.once_key = KeyExpr(cfg.idempotency.key if cfg.idempotency else None)
        self.priority = KeyExpr(cfg.priority.run if cfg.priority else None)
        self._window: Coalescer[None, float | None] = Coalescer(self._window_call)
        self._gcra: Coalescer[None, float] = Coalescer(self._gcra_call)
        self._once: Coalescer[str, bool] = Coalescer(self._once_call)
        self._debounce: Coalescer[tuple[str, float], tuple[str, float]] = Coalescer(
            self._debounce_call
        )
        self._debouncing: dict[str, tuple[asyncio.Future[None], float]] = {}
        self.slots: Slots | None = None
        if cfg.singleton is not None:
            self.slots = Slots(
                cfg.id,
                store,
                lambda: env.wall(),
                lambda seconds: env.clock.sleep(seconds),
                shared=bool(getattr(store, "shared", False)),
            )

    async def admit(
        self,
        event: Event[Any],
        start: Callable[[], Awaitable[T]],
        state: dict[str, Any] | None = None,
        queue_after: float | None = None,
    ) -> T | Refusal | Queued:
        """Run ``event`` through the controls, then ``start()`` it, refuse it, or queue it.

        ``state`` is where a parked run resumes: None for a new run; ``{"stage":
        "debounce"|"throttle", ...}`` for a run queued by this step; ``{"stage":
        "retry"}`` for a parked retry (or a resumed sleep), which passes the singleton and
        the throttle again, not the controls that admitted its run. A wait longer than
        ``queue_after`` seconds (None: none) leaves with a ``Queued`` (park the run).

        Raises:
            StoreError: the flow state could not be read or written.
        """
        scope = {"event": event.as_filter_input()}
        admitted = ADMITTED_AT.set(None)
        after = QUEUE_AFTER.set(queue_after)
        try:
            return await self._admit(event, scope, start, state or {})
        except QueuedRun as queued:
            return queued.queued
        finally:
            QUEUE_AFTER.reset(after)
            ADMITTED_AT.reset(admitted)

    async def _admit(
        self,
        event: Event[Any],
        scope: dict[str, Any],
        start: Callable[[], Awaitable[T]],
        state: dict[str, Any],
    ) -> T | Refusal:
        stage = state.get("stage")
        refusal: Refusal | None = None
        if stage is None:
            refusal = await self._before_singleton(event, scope)
        elif stage == "debounce":
            refusal = await self._debounce_resumed(event, scope, str(state.get("key", "")))
            if refusal is None:
                refusal = await self._idempotent(event, scope)
        if refusal is not None:
            return self._refused(event, refusal)
        slots, singleton = self.slots, self.cfg.singleton
        if slots is None or singleton is None:
            return await self._started(event, scope, start, state)
        key = self.singleton_key.key(event, scope)
        # A run admitted before (a parked retry, a queued throttled run) waits for its key.
        holder = await slots.take(key, "wait" if stage in ("throttle", "retry") else singleton.mode)
        if holder is None:
            why = f"singleton: a run for key {key!r} is running" if key else "singleton: running"
            return self._refused(event, Refusal("skipped", why))
        try:
            return await slots.hold(key, holder, lambda: self._started(event, scope, start, state))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if holder.cancelled and task is not None and task.uncancel() == 0:
                why = f"singleton: cancelled by a newer run for key {key!r}"
                return self._refused(event, Refusal("cancelled", why))
            raise
        finally:
            await asyncio.shield(slots.release(key, holder))

    async def _before_singleton(self, event: Event[Any], scope: dict[str, Any]) -> Refusal | None:
        if self.rate is not None:
            key = self.rate_key.key(event, scope)
            at = await self._window.ask(key, None)
            if at is None:
                return Refusal(
                    "skipped", f"rate_limit: over {self.rate.count} per {self.rate.per:g}s"
                )
            ADMITTED_AT.set(at)
        if self.cfg.debounce is not None:
            refusal = await self._debounced(event, self.debounce_key.key(event, scope), scope)
            if refusal is not None:
                return refusal
        return await self._idempotent(event, scope)

    async def _idempotent(self, event: Event[Any], scope: dict[str, Any]) -> Refusal | None:
        if self.cfg.idempotency is not None:
            key = self.once_key.key(event, scope)
            if not await self._once.ask(None, key):
                return Refusal("skipped", f"idempotency: key {key!r} already ran")
        return None

    async def _started(
        self,
        event: Event[Any],
        scope: dict[str, Any],
        start: Callable[[], Awaitable[T]],
        state: dict[str, Any],
    ) -> T:
        if self.cfg.throttle is not None:
            key = self.throttle_key.key(event, scope)
            at = state.get("at") if state.get("stage") == "throttle" else None
            if at is not None and self.env.wall() - float(at) <= LATE:
                ADMITTED_AT.set(await self._until(float(at)))
            else:
                ADMITTED_AT.set(await self._throttled(event, scope, key))
        token = RUN_PRIORITY.set(self.priority.integer(event, scope)) if self.cfg.priority else None
        try:
            return await start()
        finally:
            if token is not None:
                RUN_PRIORITY.reset(token)

    # ------------------------------------------------------------------ debounce

    async def _debounce_resumed(
        self, event: Event[Any], scope: dict[str, Any], key: str
    ) -> Refusal | None:
        """A queued debounced run, claimed near its due time: fire, wait, or superseded."""
        env = self.env
        while True:
            state, due = await self.store.flow_debounce_fire(
                self.handler, key, event.id, env.wall()
            )
            if state == "superseded":
                return Refusal("debounced", f"debounce: superseded by a later event for {key!r}")
            if state == "fire":
                return None
            self._record(event, "debouncing", "debounce: waiting for a quiet period", due)
            self._queue_if_far(event, scope, due, {"stage": "debounce", "key": key}, "debounce")
            await env.clock.sleep(max(0.0, due - env.wall()))

    def _queue_if_far(
        self, event: Event[Any], scope: dict[str, Any], due: float, state: dict[str, Any], what: str
    ) -> None:
        """Leave the admission step with a ``Queued`` when ``due`` is far off."""
        after = QUEUE_AFTER.get()
        if after is None or due - self.env.wall() <= max(after, QUEUE_LEAD):
            return
        priority = self.priority.integer(event, scope) if self.cfg.priority else 0
        reason = f"{what}: queued until {due:.3f}"
        raise QueuedRun(Queued(due - QUEUE_LEAD, state, reason, priority))

    async def _debounced(
        self, event: Event[Any], key: str, scope: dict[str, Any]
    ) -> Refusal | None:
        """Wait until ``event`` is its key's last for a quiet period; a Refusal when a later
        event supersedes it. "Later" is by the event's ``time`` when it has one (the event
        API stamps it on arrival), else by when it reached the bridge."""
        env = self.env
        at = _event_time(event) or env.wall()
        superseded = Refusal("debounced", f"debounce: superseded by a later event for {key!r}")
        earlier = self._debouncing.get(key)
        if earlier is not None and earlier[1] > at:
            return superseded  # a later event of the key already waits here
        if earlier is not None and not earlier[0].done():
            earlier[0].set_result(None)  # it is superseded
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._debouncing[key] = (me, at)
        try:
            latest, due = await self._debounce.ask(key, (event.id, at))
            if latest != event.id:
                return superseded
            self._record(event, "debouncing", "debounce: waiting for a quiet period", due)
            self._queue_if_far(event, scope, due, {"stage": "debounce", "key": key}, "debounce")
            while True:
                if me.done():
                    return superseded
                delay = due - env.wall()
                if delay > 0:
                    await _first(env.clock.sleep(delay), me)
                    continue
                state, due = await self.store.flow_debounce_fire(
                    self.handler, key, event.id, env.wall()
                )
                if state == "superseded":
                    return superseded
                if state == "fire":
                    return None
                self._queue_if_far(event, scope, due, {"stage": "debounce", "key": key}, "debounce")
        finally:
            mine = self._debouncing.get(key)
            if mine is not None and mine[0] is me:
                del self._debouncing[key]

    async def _debounce_call(
        self, key: Hashable, events: Sequence[tuple[str, float]]
    ) -> list[tuple[str, float]]:
        debounce = self.cfg.debounce
        if debounce is None:  # pragma: no cover - only called with a debounce
            raise RuntimeError("no debounce")
        # Only the latest of events that arrive together can be the key's latest.
        event_id, at = max(reversed(events), key=lambda e: e[1])
        answer = await self.store.flow_debounce(
            self.handler,
            str(key),
            event_id,
            at,
            self.env.wall(),
            debounce.period,
            debounce.timeout,
        )
        return [answer] * len(events)

    # ------------------------------------------------------------------ throttle

    async def _throttled(self, event: Event[Any], scope: dict[str, Any], key: str) -> float:
        """Wait for the start time the key's GCRA gives (queued when far off); return it."""
        env = self.env
        at = await self._gcra.ask(key, None)
        delay = at - env.wall()
        if delay > 0:
            self._record(event, "throttled", "throttle: waiting for the next start time", at)
            env.metrics.inc("bridge_runs_throttled_total", self.labels)
            self._queue_if_far(event, scope, at, {"stage": "throttle", "at": at}, "throttle")
        return await self._until(at)

    async def _until(self, at: float) -> float:
        """Wait until wall-clock time ``at``; return it."""
        delay = at - self.env.wall()
        if delay > 0:
            await self.env.clock.sleep(delay)
        return at

    async def _gcra_call(self, key: Hashable, requests: Sequence[None]) -> list[float]:
        throttle = self.cfg.throttle
        if throttle is None:  # pragma: no cover - only called with a throttle
            raise RuntimeError("no throttle")
        interval = throttle.period / throttle.limit
        return await self.store.flow_gcra(
            self.handler,
            str(key),
            self.env.wall(),
            interval,
            throttle.burst * interval,
            len(requests),
        )

    # ------------------------------------------------------------------ rate limit, idempotency

    async def _window_call(self, key: Hashable, requests: Sequence[None]) -> list[float | None]:
        """Per request, the time the window admitted it at; None when it is full."""
        rate = self.rate
        if rate is None:  # pragma: no cover - only called with a rate limit
            raise RuntimeError("no rate limit")
        now = self.env.wall()
        admitted = await self.store.flow_window(
            self.handler, str(key), now, rate.per, rate.count, len(requests)
        )
        return [now if i < admitted else None for i in range(len(requests))]

    async def _once_call(self, group: Hashable, keys: Sequence[str]) -> list[bool]:
        idempotency = self.cfg.idempotency
        if idempotency is None:  # pragma: no cover - only called with idempotency
            raise RuntimeError("no idempotency")
        taken = await self.store.flow_once(
            self.handler, list(keys), self.env.wall(), idempotency.ttl
        )
        # The same key twice in one batch: the store took it for the first only.
        seen: set[str] = set()
        out = []
        for key, ok in zip(keys, taken, strict=True):
            out.append(ok and key not in seen)
            seen.add(key)
        return out

    # ------------------------------------------------------------------ records

    def _refused(self, event: Event[Any], refusal: Refusal) -> Refusal:
        self.env.metrics.inc("bridge_runs_total", (*self.labels, ("outcome", refusal.status)))
        self._record(event, refusal.status, refusal.reason, None)
        return refusal

    def _record(self, event: Event[Any], status: str, reason: str, due: float | None) -> None:
        history = self.env.history
        if history is not None:
            history.run(RunRecord(event.id, self.handler, status, error=reason, due_at=due))


async def _first(sleep: Awaitable[None], woken: asyncio.Future[None]) -> None:
    """Sleep, or less if ``woken`` resolves first."""
    sleeper = asyncio.ensure_future(sleep)
    try:
        await asyncio.wait((sleeper, woken), return_when=asyncio.FIRST_COMPLETED)
    finally:
        sleeper.cancel()


def _event_time(event: Event[Any]) -> float | None:
    """The event's ``time`` as epoch seconds; None when it has none or it does not parse."""
    if not event.time:
        return None
    try:
        return datetime.fromisoformat(event.time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
