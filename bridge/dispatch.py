"""The fan-out engine: one event, every matched handler, each run on its own.

For each delivery: normalize (bad input -> dead letter), route, then run every
matched handler concurrently. A run has its own attempts, backoff, per-attempt
timeout, concurrency limit and idempotency key. A run that succeeds is written
to the ledger before the delivery is settled, so a redelivered message re-runs
only the branches that had not finished. A run that exhausts its attempts (or
raises ``Fatal``) becomes a dead letter. A retry whose delay is longer than the
source's inline limit is parked in the store (the scheduler brings it back when
due) and counts as final for the delivery. The returned ``Settlement`` is ACK
only when every run is final (or parked) and recorded; a store failure means
RETRY_LATER. When an event type has ``on_complete``, the event that lists every
branch's outcome is emitted once all of its runs are final.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson
from opentelemetry.trace import Status, StatusCode

from bridge.context import Context
from bridge.deadlines import Watchdog
from bridge.errors import Fatal, InvalidEvent, RetryAfter, StoreError
from bridge.events import Event, jsonable, now_iso
from bridge.flow import HandlerFlow
from bridge.handling import DeadLetterTarget, Handler
from bridge.history import HistoryRecorder
from bridge.metrics import Metrics
from bridge.normalize import Normalizer
from bridge.retry import RetryPolicy
from bridge.routing import Router, Subscription
from bridge.store.contracts import Attempt, DeadLetter, LedgerEntry, ParkedRun, RunRecord, Store
from bridge.telemetry import CURRENT_RUN
from bridge.templates import Template, TemplateError, event_scope
from bridge.tracing import Tracing, current_ids
from bridge.transport import Delivery, Publisher, Settlement

log = logging.getLogger("bridge.dispatch")
Emitter = Callable[[Sequence[Event[Any]]], Awaitable[None]]
RunStatus = Literal["succeeded", "dead_lettered", "skipped", "parked"]
_PARKED_NAMESPACE = uuid.UUID("0b6f3c1e-5d2a-4f7e-8a9b-3c4d5e6f7a8b")
_COMPLETE_NAMESPACE = uuid.UUID("9a3e4b2c-1d5f-4e6a-8b7c-2d3e4f5a6b7c")
_COMPLETION_SOURCE = "bridge://on_complete"


def parked_run_id(event_id: str, handler_id: str) -> str:
    """One parked retry per run: parking a run again replaces it."""
    return str(uuid.uuid5(_PARKED_NAMESPACE, f"{event_id}\x1f{handler_id}"))


def completion_event_id(event_id: str) -> str:
    """The id of an event's ``on_complete`` event: emitted once, whoever emits it."""
    return str(uuid.uuid5(_COMPLETE_NAMESPACE, event_id))


@dataclass(slots=True, frozen=True)
class Resume:
    """Where a parked run picks up: its next attempt number and the attempts so far."""

    attempt: int
    attempts: tuple[Attempt, ...] = ()


_KEPT_BODY = 65_536


class Clock(Protocol):
    """Time for retries; tests pass one that does not really sleep."""

    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The event loop's clock."""

    def time(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(slots=True, eq=False)
class BoundHandler:
    """A handler with everything the dispatcher needs to run it."""

    id: str
    handler: Handler
    retry: RetryPolicy
    timeout: float
    idempotency_key: Template
    limiter: asyncio.Semaphore | None = None
    flow: HandlerFlow | None = None
    dead_letter: DeadLetterTarget | None = None
    labels: tuple[tuple[str, str], ...] = ()
    succeeded_labels: tuple[tuple[str, str], ...] = ()
    dead_lettered_labels: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        # Metric label tuples, built once rather than per run.
        self.labels = (("handler", self.id),)
        self.succeeded_labels = (*self.labels, ("outcome", "succeeded"))
        self.dead_lettered_labels = (*self.labels, ("outcome", "dead_lettered"))

    def key(self, event: Event[Any]) -> str:
        """The ledger key of this handler's run for ``event``."""
        if self.idempotency_key.source == "{id}":
            return event.id
        try:
            return self.idempotency_key.render_str(event_scope(event))
        except TemplateError:
            return event.id


@dataclass(slots=True)
class Run:
    """How one handler's run for one event ended."""

    handler: str
    status: RunStatus
    result: Any = None
    error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)


class Dispatcher:
    """Runs events through their handlers.

    Args:
        router: matches events to ``BoundHandler`` subscriptions.
        store: ledger and dead letters.
        ledger: consult and write the ledger (off: every delivery runs every handler).
        unrouted: ``dead_letter`` or ``drop`` events with an unknown type or no handler.
        emitter: sends events emitted by handlers (durably) before their run is recorded.
        publishers: for handlers' ``dead_letter`` targets.
        max_fanout: most child events one attempt may emit.
        inline_limits: per connector, the longest retry delay waited inline; longer
            retries are parked. ``default_inline_limit`` for the rest.
        completions: event type (or glob) -> type of its ``on_complete`` event.
        history: records events and runs for the developer UI.
        wall: wall-clock time (epoch seconds), for parked retries' due times.
    """

    def __init__(
        self,
        router: Router[BoundHandler],
        store: Store,
        *,
        ledger: bool = True,
        unrouted: Literal["dead_letter", "drop"] = "dead_letter",
        emitter: Emitter | None = None,
        publishers: Mapping[str, Publisher] | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        max_fanout: int = 10_000,
        tracing: Tracing | None = None,
        inline_limits: Mapping[str, float] | None = None,
        default_inline_limit: float = 30.0,
        completions: Mapping[str, str] | None = None,
        history: HistoryRecorder | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.router = router
        self.store = store
        self.ledger = ledger
        self.unrouted = unrouted
        self.emitter = emitter
        self.publishers = publishers or {}
        self.metrics = metrics or Metrics()
        self.clock = clock or RealClock()
        self.rng = rng or random.Random()
        self.max_fanout = max_fanout
        self._handlers = {s.handler_id: s for s in router._subs}
        self.watchdog = Watchdog()
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.inline_limits = dict(inline_limits or {})
        self.default_inline_limit = default_inline_limit
        self.completions = dict(completions or {})
        self._completion_cache: dict[str, str | None] = {}
        self.history = history
        self.wall = wall

    async def process(self, delivery: Delivery, normalizer: Normalizer) -> Settlement:
        """Normalize, route and run one delivery; the caller settles it with the result."""
        metrics = self.metrics
        connector = delivery.connector or normalizer.connector
        metrics.inc("bridge_events_received_total", (("connector", connector),))
        try:
            event = normalizer(delivery)
        except InvalidEvent as exc:
            if self.tracing is not None:
                self.tracing.rejected(
                    connector, normalizer.transport, delivery.meta, delivery.headers, exc.reason
                )
            outcome = await self._reject(delivery, connector, exc)
            parked = delivery.meta.get("parked_id") if delivery.meta else None
            if parked and outcome is Settlement.ACK:  # dead-lettered: nothing left to retry
                await self.store.parked_done([parked])
            return outcome
        meta = delivery.meta
        replay = meta.get("replay_handler") if meta else None
        resume: Resume | None = None
        if replay and "resume_attempt" in meta:
            connector = meta.get("connector") or connector
            resume = Resume(
                int(meta["resume_attempt"]),
                tuple(Attempt(**a) for a in meta.get("resume_attempts") or ()),
            )
        if replay:
            sub = self._handlers.get(replay)
            subs = [sub] if sub is not None else []
        else:
            subs = self.router.match(event)
        metrics.observe("bridge_fanout_width", (), float(len(subs)), _WIDTH_BUCKETS)
        if not subs and resume is not None:
            # A parked run whose handler is gone: dead-letter it once, then forget it.
            outcome = await self._settle_runs(event, subs, connector, replay, resume)
            if outcome is Settlement.ACK:
                await self.store.parked_done([meta["parked_id"]])
            return outcome
        tracing = self.tracing
        if tracing is None:
            return await self._settle_runs(event, subs, connector, replay, resume)
        started = tracing.start_delivery(
            event, delivery.headers, delivery.meta, connector, normalizer.transport
        )
        if started is None:
            return await self._settle_runs(event, subs, connector, replay, resume)
        span, token = started
        try:
            outcome = await self._settle_runs(event, subs, connector, replay, resume)
            if outcome is not Settlement.ACK and span is not None:
                span.set_status(Status(StatusCode.ERROR, "left for redelivery"))
            return outcome
        finally:
            tracing.end(span, token)

    async def _settle_runs(
        self,
        event: Event[Any],
        subs: Sequence[Subscription[BoundHandler]],
        connector: str,
        replay: str | None,
        resume: Resume | None = None,
    ) -> Settlement:
        history = self.history
        if history is not None:
            history.event_started(event, connector, _trace_id(event.traceparent))
        if not subs:
            if history is not None:
                history.event_finished(event, ())
            return await self._unrouted(event, connector, replay)
        try:
            runs = await self.dispatch(
                event, subs, connector=connector, replay=bool(replay), resume=resume
            )
            if history is not None:
                if resume is not None:
                    history.refresh(event.id)
                else:
                    history.event_finished(event, [r.status for r in runs])
            if self.completions and self.emitter is not None:
                await self._complete(event, runs)
        except StoreError as exc:
            log.error(
                "store failed; message left for redelivery",
                extra={
                    "event_id": event.id,
                    "correlation_id": event.correlationid,
                    "error": str(exc),
                },
            )
            return Settlement.RETRY_LATER
        return Settlement.ACK

    async def dispatch(
        self,
        event: Event[Any],
        subs: Sequence[Subscription[BoundHandler]],
        *,
        connector: str = "",
        replay: bool = False,
        resume: Resume | None = None,
    ) -> list[Run]:
        """Run ``event`` through each subscription concurrently; return when every run is final.

        Raises:
            StoreError: a result could not be recorded (the message must not be acked).
        """
        bound = [s.target for s in subs]
        keys = [(b.id, b.key(event)) for b in bound]
        final: Mapping[tuple[str, str], str] = {}
        if self.ledger:
            final = await self.store.ledger_final(keys)
        coros = []
        runs: list[Run] = []
        for b, pair in zip(bound, keys, strict=True):
            status = final.get(pair)
            if resume is not None and status is not None and await self._ended(pair, resume):
                # The run became final but the process died before forgetting it as parked.
                await self.store.parked_done([parked_run_id(event.id, b.id)])
                runs.append(Run(b.id, "skipped"))
                continue
            if status == "succeeded" or (status == "dead_lettered" and not replay):
                runs.append(Run(b.id, "skipped"))
                continue
            coros.append(self._run(event, b, pair[1], connector, resume))
        if not coros:
            return runs
        # The first run goes inline in this task; only its siblings need tasks of their own.
        if len(coros) == 1:
            runs.append(await coros[0])
            return runs
        loop = asyncio.get_running_loop()
        others = [loop.create_task(c) for c in coros[1:]]
        failure: BaseException | None = None
        try:
            runs.append(await coros[0])
        except asyncio.CancelledError:
            await _cancel_all(others)
            raise
        except BaseException as exc:  # the siblings still finish; then it is raised
            failure = exc
        # Awaiting each sibling in turn is cheaper than gather(): no aggregate future.
        for index, task in enumerate(others):
            try:
                runs.append(await task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    await _cancel_all(others[index + 1 :])
                    raise
                failure = failure or asyncio.CancelledError(f"run of {task.get_name()} cancelled")
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return runs

    async def _ended(self, pair: tuple[str, str], resume: Resume) -> bool:
        """Whether a parked run's ledger entry records its end, not an earlier one (a dead
        letter that was replayed, and whose replay was parked, is not this run's end)."""
        entry = (await self.store.ledger_get([pair])).get(pair)
        if entry is None:
            return False
        if entry.status == "succeeded":
            return True
        last = max((a.started_at for a in resume.attempts), default=0.0)
        return entry.finished_at >= last

    async def _run(
        self,
        event: Event[Any],
        bh: BoundHandler,
        key: str,
        connector: str,
        resume: Resume | None = None,
    ) -> Run:
        flow = bh.flow
        if flow is None:
            return await self._attempts(event, bh, key, connector, resume)
        # The concurrency key is held for the whole run, backoffs included.
        async with flow.hold(event):
            return await self._attempts(event, bh, key, connector, resume)

    async def _attempts(
        self,
        event: Event[Any],
        bh: BoundHandler,
        key: str,
        connector: str,
        resume: Resume | None,
    ) -> Run:
        clock = self.clock
        started_run = t0 = clock.time()
        attempts: list[Attempt] = list(resume.attempts) if resume else []
        policy = bh.retry
        number = resume.attempt - 1 if resume else 0
        history = self.history
        while True:
            number += 1
            if bh.flow is not None and await bh.flow.before_attempt(number):
                t0 = clock.time()  # budget / rate-limit waits are not the attempt's time
            ctx = Context(event, bh.id, number, self.store)
            error: BaseException | None = None
            result: Any = None
            try:
                if bh.limiter is None:
                    result = await self._attempt(bh, event, ctx)
                else:
                    async with bh.limiter:
                        result = await self._attempt(bh, event, ctx)
            except TimeoutError:
                error = TimeoutError(f"attempt timed out after {bh.timeout:g}s")
            except (asyncio.CancelledError, StoreError):
                raise
            except Exception as exc:  # any handler failure is the run's business
                error = exc
            emitted = ctx.emitted
            if error is None and len(emitted) > self.max_fanout:
                error = Fatal(
                    f"emitted {len(emitted)} events, more than max_fanout {self.max_fanout};"
                    " nothing was emitted"
                )
            if error is None:
                if emitted and self.emitter is not None:
                    await self.emitter(emitted)
                if self.ledger:
                    await self.store.ledger_record(
                        [LedgerEntry(bh.id, key, event.id, "succeeded", result)]
                    )
                if resume is not None:
                    await self.store.parked_done([parked_run_id(event.id, bh.id)])
                self._finished(bh, bh.succeeded_labels, started_run)
                if history is not None:
                    now = clock.time()
                    done = Attempt(number, time.time() - (now - t0), now - t0)
                    history.run(
                        RunRecord(
                            event.id,
                            bh.id,
                            "succeeded",
                            [*attempts, done],
                            jsonable_result(result),
                            None,
                            [e.id for e in emitted],
                        )
                    )
                return Run(bh.id, "succeeded", result, None, attempts)
            text = _describe(error)
            now = clock.time()
            attempts.append(Attempt(number, time.time() - (now - t0), now - t0, text))
            if isinstance(error, Fatal) or number >= policy.attempts:
                await self._dead_letter_run(event, bh, key, connector, text, attempts, error)
                if resume is not None:
                    await self.store.parked_done([parked_run_id(event.id, bh.id)])
                self._finished(bh, bh.dead_lettered_labels, started_run)
                if history is not None:
                    history.run(RunRecord(event.id, bh.id, "dead_lettered", attempts, None, text))
                return Run(bh.id, "dead_lettered", error=text, attempts=attempts)
            delay = policy.delay(number, self.rng)
            if isinstance(error, RetryAfter):
                delay = max(delay, error.delay)
            self.metrics.inc("bridge_retries_total", bh.labels)
            if delay > self.inline_limits.get(connector, self.default_inline_limit):
                await self._park(event, bh, connector, number + 1, delay, attempts)
                if history is not None:
                    history.run(RunRecord(event.id, bh.id, "parked", attempts, None, text))
                return Run(bh.id, "parked", error=text, attempts=attempts)
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
            t0 = clock.time()

    async def _park(
        self,
        event: Event[Any],
        bh: BoundHandler,
        connector: str,
        attempt: int,
        delay: float,
        attempts: list[Attempt],
    ) -> None:
        due = self.wall() + delay
        await self.store.parked_put(
            [
                ParkedRun(
                    id=parked_run_id(event.id, bh.id),
                    handler=bh.id,
                    event=event.to_dict(),
                    connector=connector,
                    attempt=attempt,
                    due_at=due,
                    attempts=list(attempts),
                )
            ]
        )
        self.metrics.inc("bridge_runs_parked_total", bh.labels)
        log.warning(
            "attempt failed; retry parked",
            extra={
                "correlation_id": event.correlationid,
                "event_id": event.id,
                "event_type": event.type,
                "handler": bh.id,
                "attempt": attempt - 1,
                "retry_in": round(delay, 3),
                "error": attempts[-1].error if attempts else None,
            },
        )

    def _completion_type(self, event_type: str) -> str | None:
        cache = self._completion_cache
        if event_type in cache:
            return cache[event_type]
        found = self.completions.get(event_type)
        if found is None:
            for pattern, target in self.completions.items():
                if fnmatch.fnmatchcase(event_type, pattern):
                    found = target
                    break
        cache[event_type] = found
        return found

    async def _complete(self, event: Event[Any], runs: Sequence[Run]) -> None:
        """Emit the ``on_complete`` event once every run of ``event`` is final."""
        if event.source == _COMPLETION_SOURCE:
            return  # a completion event never gets a completion of its own (no loop)
        target = self._completion_type(event.type)
        if target is None:
            return
        subs = self.router.match(event)
        outcomes: dict[str, dict[str, Any]] = {}
        for r in runs:
            if r.status == "succeeded":
                outcomes[r.handler] = {"status": "succeeded", "result": jsonable_result(r.result)}
            elif r.status == "dead_lettered":
                outcomes[r.handler] = {"status": "dead_lettered", "error": r.error}
        missing = [(s.target.id, s.target.key(event)) for s in subs if s.target.id not in outcomes]
        if missing:
            if not self.ledger:
                return
            # Skipped and parked branches: the ledger knows whether they are final now
            # (a parked retry may have finished while a sibling was still running).
            found = await self.store.ledger_get(missing)
            if len(found) < len(missing):
                return  # a branch is parked, or still running elsewhere: not complete yet
            for (handler, _), entry in found.items():
                if entry.status == "succeeded":
                    outcomes[handler] = {"status": "succeeded", "result": entry.result}
                else:
                    outcomes[handler] = {"status": "dead_lettered", "error": entry.result}
        if not outcomes:
            return
        ordered = {h: outcomes[h] for h in sorted(outcomes)}
        failed = [h for h, o in ordered.items() if o["status"] != "succeeded"]
        done: Event[Any] = Event(
            id=completion_event_id(event.id),
            source=_COMPLETION_SOURCE,
            type=target,
            data={
                "event": {
                    "id": event.id,
                    "type": event.type,
                    "subject": event.subject,
                    "data": event.data_json(),
                },
                "status": "partial"
                if failed and len(failed) < len(ordered)
                else ("dead_lettered" if failed else "succeeded"),
                "succeeded": len(ordered) - len(failed),
                "dead_lettered": len(failed),
                "failed": failed,
                "runs": ordered,
            },
            time=now_iso(),
            subject=event.subject,
            correlationid=event.correlationid or event.id,
            traceparent=event.traceparent,
            tracestate=event.tracestate,
            parentid=event.id,
        )
        if self.emitter is not None:
            await self.emitter([done])

    async def _attempt(self, bh: BoundHandler, event: Event[Any], ctx: Context) -> Any:
        deadline = self.watchdog.arm(bh.timeout)
        run_token = CURRENT_RUN.set(ctx)
        tracing = self.tracing
        span = token = None
        if tracing is not None:
            started = tracing.start_attempt(bh.id, ctx.attempt)
            if started is not None:
                span, token = started
        try:
            return await bh.handler.invoke(event, ctx)
        except asyncio.CancelledError as exc:
            task = deadline.task
            if deadline.fired and task is not None and task.uncancel() == 0:
                if span is not None:
                    Tracing.fail(span, exc, f"timed out after {bh.timeout:g}s")
                raise TimeoutError from None
            raise
        except Exception as exc:
            if span is not None:
                Tracing.fail(span, exc, _describe(exc))
            raise
        finally:
            deadline.finish()
            CURRENT_RUN.reset(run_token)
            if span is not None:
                Tracing.end(span, token)

    async def close(self) -> None:
        """Disarm the timeout watchdog."""
        self.watchdog.close()

    def _finished(
        self, bh: BoundHandler, labels: tuple[tuple[str, str], ...], started: float
    ) -> None:
        metrics = self.metrics
        metrics.counters[("bridge_runs_total", labels)] += 1
        metrics.observe("bridge_run_duration_seconds", bh.labels, self.clock.time() - started)

    async def _dead_letter_run(
        self,
        event: Event[Any],
        bh: BoundHandler,
        key: str,
        connector: str,
        reason: str,
        attempts: list[Attempt],
        error: BaseException,
    ) -> None:
        letter = DeadLetter(
            reason=reason,
            connector=connector,
            handler=bh.id,
            event=event.to_dict(),
            attempts=attempts,
            event_id=event.id,
            event_type=event.type,
            correlation_id=event.correlationid,
            trace_id=_trace_id(event.traceparent),
            detail=getattr(error, "detail", None),
        )
        await self.store.dead_letter_add(letter)
        if self.ledger:
            await self.store.ledger_record(
                [LedgerEntry(bh.id, key, event.id, "dead_lettered", reason)]
            )
        self.metrics.inc("bridge_dead_letters_total", (("handler", bh.id),))
        log.error(
            "run dead-lettered",
            extra={
                "correlation_id": event.correlationid,
                "event_id": event.id,
                "event_type": event.type,
                "handler": bh.id,
                "attempt": len(attempts),
                "dead_letter_id": letter.id,
                "error": reason,
            },
        )
        if bh.dead_letter is not None:
            await self._publish_dead_letter(bh.dead_letter, letter)

    async def _publish_dead_letter(self, target: DeadLetterTarget, letter: DeadLetter) -> None:
        publisher = self.publishers.get(target.connector)
        if publisher is None:
            return
        headers = {
            "bridge-dead-letter-id": letter.id,
            "bridge-handler": letter.handler or "",
            "bridge-reason": letter.reason[:1000],
        }
        if letter.correlation_id:
            headers["x-correlation-id"] = letter.correlation_id
        try:
            await publisher.publish(target.destination, orjson.dumps(letter.event), headers, None)
        except Exception as exc:  # the letter is in the store; the copy is best effort
            log.error(
                "could not publish dead letter copy",
                extra={
                    "dead_letter_id": letter.id,
                    "connector": target.connector,
                    "error": str(exc),
                },
            )

    async def _reject(self, delivery: Delivery, connector: str, exc: InvalidEvent) -> Settlement:
        self.metrics.inc(
            "bridge_events_invalid_total", (("connector", connector), ("reason", exc.reason))
        )
        if exc.reason == "unknown_type" and self.unrouted == "drop":
            log.info(
                "dropped event of unknown type", extra={"connector": connector, "error": str(exc)}
            )
            return Settlement.ACK
        letter = DeadLetter(
            reason=f"{exc.reason}: {_short(exc.detail)}" if exc.detail is not None else exc.reason,
            connector=connector,
            body=_kept_body(delivery.body),
            headers=dict(delivery.headers),
            meta={k: _plain(v) for k, v in delivery.meta.items()},
            detail=exc.detail,
        )
        try:
            await self.store.dead_letter_add(letter)
        except StoreError:
            return Settlement.RETRY_LATER
        self.metrics.inc("bridge_dead_letters_total", (("handler", ""),))
        log.warning(
            "invalid message dead-lettered",
            extra={"connector": connector, "dead_letter_id": letter.id, "error": letter.reason},
        )
        return Settlement.ACK

    async def _unrouted(self, event: Event[Any], connector: str, replay: str | None) -> Settlement:
        self.metrics.inc("bridge_events_unrouted_total", (("connector", connector),))
        if self.unrouted == "drop":
            return Settlement.ACK
        reason = (
            f"unrouted: handler {replay!r} does not exist"
            if replay
            else f"unrouted: no handler subscribes to {event.type!r}"
        )
        letter = DeadLetter(
            reason=reason,
            connector=connector,
            event=event.to_dict(),
            event_id=event.id,
            event_type=event.type,
            correlation_id=event.correlationid,
            trace_id=_trace_id(event.traceparent),
        )
        try:
            await self.store.dead_letter_add(letter)
        except StoreError:
            return Settlement.RETRY_LATER
        self.metrics.inc("bridge_dead_letters_total", (("handler", ""),))
        return Settlement.ACK


_WIDTH_BUCKETS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


async def _cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel sibling runs (the delivery itself was cancelled) and wait for them to end."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


def _describe(error: BaseException) -> str:
    text = str(error)
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def _short(detail: Any) -> str:
    text = detail if isinstance(detail, str) else orjson.dumps(detail, default=str).decode()
    return text if len(text) <= 500 else text[:500] + "..."


def _kept_body(body: bytes) -> str:
    kept = body[:_KEPT_BODY]
    try:
        text = kept.decode("utf-8")
    except UnicodeDecodeError:
        text = "base64:" + base64.b64encode(kept).decode()
    if len(body) > _KEPT_BODY:
        text += f"... [truncated, {len(body)} bytes in all]"
    return text


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _trace_id(traceparent: str | None) -> str | None:
    """The trace id of the current span, else the one in the event's traceparent."""
    live, _ = current_ids()
    if live is not None:
        return live
    if traceparent and len(traceparent) >= 35:
        return traceparent[3:35]
    return None


def jsonable_result(value: Any) -> Any:
    """A handler's result as plain JSON values (for the history and completion events)."""
    try:
        return orjson.loads(orjson.dumps(jsonable(value), default=str))
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)
