"""One run's attempts: flow control, timeout, retry with backoff, and how the run ends.

A run holds its handler's concurrency key for all its attempts and backoffs.
Each attempt waits for the retry budget and the rate limit, then for the
handler's concurrency limit, and is cancelled at its timeout. A failed attempt
is retried after the policy's delay (at least a ``RetryAfter``'s); a delay longer
than the connector's inline limit parks the run instead. ``Fatal``, or the last
attempt failing, dead-letters it. A handler that sleeps or waits durably
(``Suspended``) parks the run without a failed attempt (``bridge.waits``). Right
before each attempt (``Runner._start``), a run that ``cancel_on`` cancelled since it
was created ends ``cancelled`` instead (``bridge.cancellation``).

Whatever the handler raises is the attempt's failure, ``BaseException`` included:
a ``KeyboardInterrupt``, ``SystemExit`` or ``GeneratorExit`` raised by handler code
fails the attempt (and is retried per policy) rather than stopping the bridge, and
so does a ``CancelledError`` the handler raises while nothing cancelled its run.
A result the ledger cannot write or a child the inbox cannot hold is checked here,
inside the attempt, and dead-letters the run at once (``bridge.dispatch.storable``).
Each failed attempt keeps its traceback (last 50 frames, at most 8 KB).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from types import CoroutineType
from typing import Any

from bridge.cancellation import RunCancelled
from bridge.context import Context
from bridge.deadlines import Deadline, Watchdog
from bridge.dispatch.batches import Batches
from bridge.dispatch.branches import resumed
from bridge.dispatch.endings import Endings
from bridge.dispatch.env import DispatchConfig, DispatchEnv
from bridge.dispatch.runs import BoundHandler, Resume, Run, RunState, parked_run_id
from bridge.dispatch.storable import check_children, check_result, describe, format_traceback
from bridge.errors import Fatal, RetryAfter, StoreError, Suspended
from bridge.events import Event
from bridge.flow import HandlerFlow
from bridge.flow.controls import Queued, Refusal
from bridge.store.contracts import Attempt, RunRecord
from bridge.telemetry import CURRENT_RUN
from bridge.tracing import Tracing

log = logging.getLogger("bridge.dispatch")


class Runner:
    """Runs one handler for one event until the run is final or parked.

    Args:
        config: the fan-out limit, the inline retry limits, whether the ledger is kept.
        env: the store, clock, metrics, tracing, history and emitter.
    """

    def __init__(self, config: DispatchConfig, env: DispatchEnv) -> None:
        self.config = config
        self.env = env
        self.endings = Endings(config, env)
        self.batches = Batches(env, self.endings)
        self.watchdog = Watchdog()

    def run(
        self,
        event: Event[Any],
        bh: BoundHandler,
        key: str | None,
        connector: str,
        resume: Resume | None = None,
    ) -> Coroutine[Any, Any, Run]:
        """Attempt ``bh`` on ``event`` until it succeeds, is dead-lettered or parked (a
        coroutine to await; without flow control, no wrapper coroutine per run). ``key``:
        the run's ledger key, None to render it only if it is needed.

        Raises:
            StoreError: the run's end could not be recorded.
            asyncio.CancelledError: the run was cancelled; nothing of it is recorded.
        """
        if bh.batch is not None and resume is None:
            return self.batches.run(event, bh, bh.key(event) if key is None else key, connector)
        flow = bh.flow
        created = resume.created if resume and resume.created else self.env.wall()
        if flow is None:
            return self._attempts(event, bh, key, connector, resume, created)
        return self._admitted(flow, event, bh, key, connector, resume, created)

    async def _admitted(
        self,
        flow: HandlerFlow,
        event: Event[Any],
        bh: BoundHandler,
        key: str | None,
        connector: str,
        resume: Resume | None,
        created: float,
    ) -> Run:
        flow.bind(self.env.store, self.env)
        admission = flow.admission
        if admission is None:
            return await self._held(flow, event, bh, key, connector, resume, created)
        # The admission step (bridge.flow.controls): the run starts, ends refused, or is
        # queued in the store (a long throttle or debounce wait). A parked run resumes
        # where it was queued; a parked retry passes the singleton and throttle again.
        state = None if resume is None else (resume.admission or {"stage": "retry"})
        outcome = await admission.admit(
            event,
            lambda: self._held(flow, event, bh, key, connector, resume, created),
            state,
            self.config.inline_limit(connector),
        )
        if isinstance(outcome, Refusal):
            if resume is not None:
                await self.endings.forget(parked_run_id(event.id, bh.id))
            ended = Run(bh.id, outcome.status, error=outcome.reason)
        elif isinstance(outcome, Queued):
            ended = await self.endings.queued(event, bh, connector, resume, created, outcome)
        else:
            return outcome  # its ending told the fan-out already
        let_go = self.endings.let_go
        if let_go is not None and key is not None:
            let_go((bh.id, key), ended)
        return ended

    async def _held(
        self,
        flow: HandlerFlow,
        event: Event[Any],
        bh: BoundHandler,
        key: str | None,
        connector: str,
        resume: Resume | None,
        created: float,
    ) -> Run:
        # The concurrency key is held for the whole run, backoffs included.
        async with flow.hold(event):
            return await self._attempts(event, bh, key, connector, resume, created)

    async def close(self) -> None:
        """Disarm the timeout watchdog; cancel running batches; write what is noted."""
        self.watchdog.close()
        await self.batches.close()
        await self.endings.recorder.idle()

    async def _attempts(
        self,
        event: Event[Any],
        bh: BoundHandler,
        key: str | None,
        connector: str,
        resume: Resume | None,
        created: float,
    ) -> Run:
        env = self.env
        clock = env.clock
        started = clock.time()
        attempts: list[Attempt] = list(resume.attempts) if resume else []
        run = RunState(event, bh, key, connector, resume, started, attempts, 0, started, created)
        policy = bh.retry
        number = resume.attempt - 1 if resume else 0
        history = env.history
        endings = self.endings
        flow, limiter = bh.flow, bh.limiter
        # Without cancel_on there is nothing to check before an attempt: no wrapper coroutine.
        start = self._start if bh.cancel is not None else None
        # Results and emitted events are checked only when something will store them.
        ledger = self.config.ledger
        while True:
            number += 1
            run.number = number
            if flow is not None and await flow.before_attempt(number):
                run.began = clock.time()  # budget / rate-limit waits are not the attempt's time
            ctx = Context(event, bh.id, number, env.store, env.wall)
            error: BaseException | None = None
            result: Any = None
            try:
                if limiter is None:
                    if start is None:
                        result = await self._attempt(bh, event, ctx)
                    else:
                        result = await start(run, ctx)
                else:
                    async with limiter:
                        result = await self._start(run, ctx)
            except TimeoutError:
                error = TimeoutError(f"attempt timed out after {bh.timeout:g}s")
            except (asyncio.CancelledError, StoreError):
                raise
            except RunCancelled as cancelled:  # cancel_on: the run never starts
                return await endings.cancelled(run, str(cancelled))
            except Suspended as suspended:  # a durable sleep or wait: parked, not failed
                return await endings.suspended(run, suspended)
            except BaseException as exc:  # any handler failure is the run's business
                # KeyboardInterrupt or SystemExit raised by a handler is its failure, not a
                # signal to the bridge (a signal reaches the bridge through its handlers).
                error = exc
            emitted = ctx.emitted
            # Nothing to check for a run that returned None and emitted nothing.
            if error is None and (emitted or (ledger and result is not None)):
                max_fanout = self.config.max_fanout
                if len(emitted) > max_fanout:
                    error = Fatal(
                        f"emitted {len(emitted)} events, more than max_fanout {max_fanout};"
                        " nothing was emitted"
                    )
                else:
                    error = self._unstorable(result, emitted)
            if error is None:
                if emitted or resume is not None:
                    return await endings.succeeded(run, result, emitted)
                if ledger:  # written behind the run, with others; its delivery waits for it
                    return endings.noted(run, result)
                return endings.ended_well(run, result, emitted)  # nothing to write or send
            text = describe(error)
            now = clock.time()
            t0 = run.began
            attempts.append(
                Attempt(number, time.time() - (now - t0), now - t0, text, format_traceback(error))
            )
            # The traceback is text now. Kept, it would hold this frame, whose ``error``
            # holds it: a cycle per failed attempt (the event, its run, the handler's
            # frames) that only the collector frees.
            error.__traceback__ = None
            if isinstance(error, Fatal) or number >= policy.attempts:
                return await endings.dead_lettered(run, text, error)
            delay = policy.delay(number, env.rng)
            if isinstance(error, RetryAfter):
                delay = max(delay, error.delay)
            env.metrics.inc("bridge_retries_total", bh.labels)
            if delay > self.config.inline_limit(connector):
                return await endings.parked(run, text, delay)
            if history is not None:
                history.run(RunRecord(event.id, bh.id, "running", list(attempts), None, text))
            log.warning(
                "attempt failed; retrying",
                extra={
                    "correlation_id": event.correlationid,
                    "event_id": event.id,
                    "event_type": event.type,
                    "handler": bh.id,
                    "attempt": number,
                    "retry_in": round(delay, 3),
                    "error": text,
                },
            )
            await clock.sleep(delay)
            run.began = clock.time()

    def _unstorable(self, result: Any, emitted: list[Event[Any]]) -> Fatal | None:
        """The value that the store could not write, as the attempt's failure (the same
        value would come back on every retry, so it dead-letters the run at once)."""
        try:
            if self.config.ledger:
                check_result(result)
            if emitted:
                check_children(emitted)
        except Fatal as exc:
            return exc
        return None

    async def _start(self, run: RunState, ctx: Context) -> Any:
        """The one point where an attempt is about to start: a run cancelled by
        ``cancel_on`` since it was created ends here (``RunCancelled``)."""
        cancel = run.bh.cancel
        if cancel is not None:
            reason = await cancel.cancelled(run.event, run.created)
            if reason is not None:
                raise RunCancelled(reason)
        return await self._attempt(run.bh, run.event, ctx)

    async def _attempt(self, bh: BoundHandler, event: Event[Any], ctx: Context) -> Any:
        watchdog = self.watchdog
        deadline: Deadline | None = None
        if bh.reads_deadline:
            deadline = watchdog.arm(bh.timeout)
        run_token = CURRENT_RUN.set(ctx)
        tracing = self.env.tracing
        span = token = None
        if tracing is not None:
            started = tracing.start_attempt(bh.id, ctx.attempt)
            if started is not None:
                span, token = started
        try:
            if deadline is not None:
                return await bh.handler.invoke(event, ctx)
            # The timeout is armed when the call first waits: until then no timer can fire
            # (the loop is not running), and a call that ends without waiting needs none.
            since = watchdog.now()
            call = bh.handler.invoke(event, ctx)
            if type(call) is not CoroutineType:
                deadline = watchdog.arm(bh.timeout, since)
                return await call
            try:
                waiting = call.send(None)
            except StopIteration as ended:
                return ended.value
            deadline = watchdog.arm(bh.timeout, since)
            return await resumed(call, waiting)
        except asyncio.CancelledError as exc:
            task = deadline.task if deadline is not None else None
            if (
                deadline is not None
                and deadline.fired
                and task is not None
                and task.uncancel() == 0
            ):
                if span is not None:
                    Tracing.fail(span, exc, f"timed out after {bh.timeout:g}s")
                raise TimeoutError from None
            current = asyncio.current_task()
            if current is not None and current.cancelling() == 0:
                # Nobody cancelled this task: the handler raised CancelledError itself.
                error = HandlerCancelled("the handler raised CancelledError")
                if span is not None:
                    Tracing.fail(span, error, describe(error))
                raise error from exc
            raise
        except Suspended:
            raise
        except BaseException as exc:
            if span is not None:
                Tracing.fail(span, exc, describe(exc))
            raise
        finally:
            if deadline is not None:
                deadline.finish()
            CURRENT_RUN.reset(run_token)
            if span is not None:
                Tracing.end(span, token)


class HandlerCancelled(Exception):
    """A handler raised ``CancelledError`` while nothing cancelled its run: a failed attempt."""
