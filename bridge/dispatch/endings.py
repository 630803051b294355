"""How a run ends: recorded as succeeded, dead-lettered, cancelled (``cancel_on``), or
parked for a later retry (or while it sleeps or waits for an event).

Each ending is written to the store (ledger entry, dead letter, parked retry)
before it is counted in ``bridge_runs_total`` and recorded in the history; a
resumed parked run forgets its parked entry only once its end is stored. A plain
success (nothing emitted, not a resumed parked run) is written behind its run, in a
batch with others (``bridge.dispatch.recorder``): counted once that batch is written.

Every other ending here tells ``Endings.let_go`` (when set: the fan-out's, with the
ledger on a store of one process) that its run ended, so that the run's duplicates in
flight are let go as it ends, not when its slowest sibling does; the runner tells it of
a run that flow control refused or queued (``Endings.queued`` does not know its key).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

import bridge.jsonio as jsonio
from bridge.dispatch.env import DispatchConfig, DispatchEnv
from bridge.dispatch.recorder import Recorder
from bridge.dispatch.runs import (
    BoundHandler,
    Resume,
    Run,
    RunState,
    jsonable_result,
    parked_run_id,
    trace_id,
)
from bridge.dispatch.storable import storable_detail
from bridge.errors import Suspended
from bridge.events import Event
from bridge.flow.coalesce import Coalescer
from bridge.flow.controls import Queued
from bridge.flow.priority import RUN_PRIORITY
from bridge.handling import DeadLetterTarget
from bridge.store.contracts import Attempt, DeadLetter, LedgerEntry, ParkedRun, RunRecord

log = logging.getLogger("bridge.dispatch")


class Endings:
    """Records the end of runs.

    Args:
        config: whether the ledger is kept.
        env: the store, metrics, clock, history, publishers and wall clock.

    Raises:
        StoreError: from every method, when the store fails; the run's message
            must then not be acked.
    """

    def __init__(self, config: DispatchConfig, env: DispatchEnv) -> None:
        self.config = config
        self.env = env
        self._puts: Coalescer[ParkedRun, None] = Coalescer(self._put)
        self._dones: Coalescer[str, None] = Coalescer(self._done)
        self.recorder = Recorder(self._record, self.counted)
        # Told of each run that ended without being written behind: (handler, key), run.
        self.let_go: Callable[[tuple[str, str], Run], None] | None = None

    async def _put(self, _: Hashable, runs: Sequence[ParkedRun]) -> list[None]:
        await self.env.store.parked_put(runs)
        return [None] * len(runs)

    def _record(self, entries: Sequence[LedgerEntry]) -> Awaitable[None]:
        # Looked up at each write: the store's calls may be wrapped (timed) after this.
        return self.env.store.ledger_record(entries)

    async def _done(self, _: Hashable, ids: Sequence[str]) -> list[None]:
        await self.env.store.parked_done(ids)
        return [None] * len(ids)

    async def forget(self, parked_id: str) -> None:
        """Forget a parked run that became final; those ending together share one call."""
        await self._dones.ask(None, parked_id)

    async def queued(
        self,
        event: Event[Any],
        bh: BoundHandler,
        connector: str,
        resume: Resume | None,
        created: float,
        queued: Queued,
    ) -> Run:
        """Park a run that the admission step queued (a long throttle or debounce wait),
        due a little before its start: its message is settled once this returns. The runs
        queued together share one store call."""
        attempts = list(resume.attempts) if resume is not None else []
        run = ParkedRun(
            id=parked_run_id(event.id, bh.id),
            handler=bh.id,
            event=event.to_dict(),
            connector=connector,
            attempt=resume.attempt if resume is not None else 1,
            due_at=queued.due,
            attempts=attempts,
            created_at=created,
            admission=queued.state,
            priority=queued.priority,
        )
        await self._puts.ask(None, run)
        if bh.cancel is not None:
            await bh.cancel.woken_if_cancelled(event, created)
        self.env.metrics.inc("bridge_runs_queued_total", bh.labels)
        return Run(bh.id, "parked", error=queued.reason, attempts=attempts)

    async def succeeded(
        self,
        run: RunState,
        result: Any,
        emitted: Sequence[Event[Any]],
        ledger: bool = True,
    ) -> Run:
        """Send what the run emitted, then record its success in the ledger (unless the
        caller did: a batch records all its events' entries in one write)."""
        env = self.env
        event, bh = run.event, run.bh
        emitter = env.emitter
        if emitted and emitter is not None:
            await emitter(emitted)
        if self.config.ledger and ledger:
            await env.store.ledger_record(
                [LedgerEntry(bh.id, run.key, event.id, "succeeded", result)]
            )
        if run.resume is not None:
            await self.forget(parked_run_id(event.id, bh.id))
        return self._ends(run, self.ended_well(run, result, emitted))

    def noted(self, run: RunState, result: Any) -> Run:
        """A success with nothing emitted, its ledger entry noted for the next batched
        write (the ledger is kept, the run is not a resumed parked one): the ``Run``
        returned carries that write, which its delivery awaits before it settles; the
        run is counted once it is written."""
        ended = Run(run.bh.id, "succeeded", result, None, run.attempts)
        ended.written = self.recorder.note(run, result, ended)
        return ended

    def ended_well(self, run: RunState, result: Any, emitted: Sequence[Event[Any]]) -> Run:
        """Count a success whose emitted events are sent and whose ledger entry is written
        (or that has neither), and record it in the history; its ``Run``."""
        self.counted(run, result, emitted)
        return Run(run.bh.id, "succeeded", result, None, run.attempts)

    def counted(self, run: RunState, result: Any, emitted: Sequence[Event[Any]]) -> None:
        """``ended_well`` without the ``Run``: for a success written behind, whose ``Run``
        its delivery already holds."""
        env = self.env
        event, bh = run.event, run.bh
        self._finished(bh, bh.succeeded_labels, run.started)
        history = env.history
        if history is not None:
            now = env.clock.time()
            t0 = run.began
            done = Attempt(run.number, time.time() - (now - t0), now - t0)
            history.run(
                RunRecord(
                    event.id,
                    bh.id,
                    "succeeded",
                    [*run.attempts, done],
                    jsonable_result(result),
                    None,
                    [e.id for e in emitted],
                )
            )

    async def dead_lettered(self, run: RunState, text: str, error: BaseException) -> Run:
        """Store the run's dead letter (and its ledger entry); publish a copy if asked.

        ``text`` describes ``error``, the last attempt's failure.
        """
        event, bh, attempts = run.event, run.bh, run.attempts
        await self._dead_letter(run, text, error)
        if run.resume is not None:
            await self.forget(parked_run_id(event.id, bh.id))
        self._finished(bh, bh.dead_lettered_labels, run.started)
        history = self.env.history
        if history is not None:
            history.run(RunRecord(event.id, bh.id, "dead_lettered", attempts, None, text))
        return self._ends(run, Run(bh.id, "dead_lettered", error=text, attempts=attempts))

    async def parked(self, run: RunState, text: str, delay: float) -> Run:
        """Park the run's next attempt in the store, due in ``delay`` seconds.

        ``text`` describes the failure of the attempt just made.
        """
        env = self.env
        event, bh, attempts = run.event, run.bh, run.attempts
        attempt = run.number + 1
        due = env.wall() + delay
        await self._park(run, attempt, due)
        env.metrics.inc("bridge_runs_parked_total", bh.labels)
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
        if env.history is not None:
            env.history.run(RunRecord(event.id, bh.id, "parked", attempts, None, text, due_at=due))
        return self._ends(run, Run(bh.id, "parked", error=text, attempts=attempts))

    async def suspended(self, run: RunState, suspended: Suspended) -> Run:
        """Park a run that sleeps or waits (``bridge.waits``) until ``suspended.until``.

        The attempt made no failure: the run resumes at the same attempt number, its
        attempts so far unchanged. Its delivery counts it as final, as a parked retry.
        """
        env = self.env
        event, bh, attempts = run.event, run.bh, run.attempts
        await self._park(run, run.number, suspended.until)
        if suspended.after_park is not None:
            await suspended.after_park()
        env.metrics.inc("bridge_runs_suspended_total", (*bh.labels, ("kind", suspended.kind)))
        log.info(
            "run parked: %s",
            suspended.reason,
            extra={
                "correlation_id": event.correlationid,
                "event_id": event.id,
                "handler": bh.id,
                "attempt": run.number,
            },
        )
        if env.history is not None:
            record = RunRecord(
                event.id, bh.id, suspended.kind, attempts, None, suspended.reason,
                due_at=suspended.until,
            )  # fmt: skip
            env.history.run(record)
        return self._ends(run, Run(bh.id, "parked", error=suspended.reason, attempts=attempts))

    async def cancelled(self, run: RunState, reason: str) -> Run:
        """Record a run that ``cancel_on`` cancelled before it started: final, in the
        ledger (status ``cancelled``), never dead-lettered."""
        env = self.env
        event, bh, attempts = run.event, run.bh, run.attempts
        if self.config.ledger:
            await env.store.ledger_record(
                [LedgerEntry(bh.id, run.key, event.id, "cancelled", reason)]
            )
        if run.resume is not None:
            await self.forget(parked_run_id(event.id, bh.id))
        self._finished(bh, (*bh.labels, ("outcome", "cancelled")), run.started)
        log.info(
            "run cancelled",
            extra={
                "correlation_id": event.correlationid,
                "event_id": event.id,
                "handler": bh.id,
                "error": reason,
            },
        )
        if env.history is not None:
            env.history.run(RunRecord(event.id, bh.id, "cancelled", attempts, None, reason))
        return self._ends(run, Run(bh.id, "cancelled", error=reason, attempts=attempts))

    def _ends(self, run: RunState, ended: Run) -> Run:
        """``ended``, how ``run`` ended (not written behind), once ``let_go`` is told."""
        let_go = self.let_go
        if let_go is not None:
            let_go((run.bh.id, run.key), ended)
        return ended

    async def _park(self, run: RunState, attempt: int, due: float) -> None:
        """Put the run in the store, to run attempt number ``attempt`` at ``due``; due now if
        ``cancel_on`` cancelled it meanwhile (it then ends cancelled at its next start)."""
        event, bh = run.event, run.bh
        await self.env.store.parked_put(
            [
                ParkedRun(
                    id=parked_run_id(event.id, bh.id),
                    handler=bh.id,
                    event=event.to_dict(),
                    connector=run.connector,
                    attempt=attempt,
                    due_at=due,
                    attempts=list(run.attempts),
                    created_at=run.created,
                    priority=RUN_PRIORITY.get(),
                )
            ]
        )
        if bh.cancel is not None and due > self.env.wall():
            await bh.cancel.woken_if_cancelled(event, run.created)

    def _finished(
        self, bh: BoundHandler, labels: tuple[tuple[str, str], ...], started: float
    ) -> None:
        metrics = self.env.metrics
        metrics.counters[("bridge_runs_total", labels)] += 1
        metrics.observe("bridge_run_duration_seconds", bh.labels, self.env.clock.time() - started)

    async def _dead_letter(self, run: RunState, reason: str, error: BaseException) -> None:
        event, bh, attempts = run.event, run.bh, run.attempts
        letter = DeadLetter(
            reason=reason,
            connector=run.connector,
            handler=bh.id,
            event=event.to_dict(),
            attempts=attempts,
            event_id=event.id,
            event_type=event.type,
            correlation_id=event.correlationid,
            trace_id=trace_id(event.traceparent),
            detail=_detail(error),
            key=run.key,
        )
        # r17 (7a): the letter and its ledger entry in one transaction, so a fault between
        # them can neither re-run every attempt nor file a second letter.
        entry = None
        if self.config.ledger:
            entry = LedgerEntry(bh.id, run.key, event.id, "dead_lettered", reason)
        await self.env.store.dead_letter_final(letter, entry)
        self.env.metrics.inc("bridge_dead_letters_total", (("handler", bh.id),))
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
                "traceback": attempts[-1].traceback if attempts else None,
            },
        )
        if bh.dead_letter is not None:
            await self._publish_copy(bh.dead_letter, letter)

    async def _publish_copy(self, target: DeadLetterTarget, letter: DeadLetter) -> None:
        publisher = self.env.publishers.get(target.connector)
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
            await publisher.publish(target.destination, jsonio.dumps(letter.event), headers, None)
        except Exception as exc:  # the letter is in the store; the copy is best effort
            log.error(
                "could not publish dead letter copy",
                extra={
                    "dead_letter_id": letter.id,
                    "connector": target.connector,
                    "error": str(exc),
                },
            )


def _detail(error: BaseException) -> Any:
    """The error's ``detail`` attribute as the store can write it."""
    try:
        detail = getattr(error, "detail", None)
    except Exception:  # a property of the handler's exception may raise anything
        return None
    return storable_detail(detail)
