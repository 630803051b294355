"""``batch``: a handler that takes a list of events, fired at ``max_size`` or at ``timeout``.

A run of a batching handler joins the open batch of its handler and batch key
(``key``, CEL over the event; one batch for all without it) instead of running
alone. The batch fires when it holds ``max_size`` events, or ``timeout`` after its
first event came, whichever is first: the handler's ``invoke_batch(events, ctx)``
is called with them (python: the function gets the list; http: one POST of a
CloudEvents JSON batch). The batch's attempts follow the handler's retry policy
and timeout, and wait inline (a batch never parks).

The ledger and dead letters stay per event: when the batch succeeds, each event
gets its own ledger entry (the batch's result), all in one write, so an event is in
exactly one successful batch; when it is dead-lettered,
each event gets its own dead letter. Each event's run, and so its source message,
is final once the batch is: a message is settled only then. A redelivered event
whose run already succeeded in a batch is skipped by the ledger, as any run.

Batches are held in process: each replica batches the events it consumes, and a
batch waiting for its timeout holds its events' messages in flight (a source's
``max_in_flight`` below ``max_size`` means batches fire at their timeout). A
process that dies loses no event: nothing of the batch was settled, so its
messages come back and are batched again. Concurrency keys, rate limits and
``cancel_on`` apply to single runs, not to batches; the handler's ``concurrency``
limits batches at once.

While it waits in an open batch, an event's run is recorded in the run history as
``batched``, its reason naming the batch key, and due when the batch times out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import bridge.jsonio as jsonio
from bridge.context import Context
from bridge.dispatch.endings import Endings
from bridge.dispatch.env import DispatchEnv
from bridge.dispatch.runs import BoundHandler, Run, RunState
from bridge.dispatch.storable import check_result, describe, format_traceback
from bridge.errors import Fatal, RetryAfter, StoreError, Suspended
from bridge.events import Event
from bridge.limits import BatchConfig
from bridge.routing import compile_filter
from bridge.store.contracts import Attempt, LedgerEntry, RunRecord

log = logging.getLogger("bridge.dispatch")


@runtime_checkable
class BatchHandler(Protocol):
    """A handler kind that takes batches."""

    async def invoke_batch(self, events: Sequence[Event[Any]], ctx: Context) -> Any:
        """Handle the events at once; return one JSON-able result or raise."""


class Timer(Protocol):
    """A pending call that can be called off (``asyncio.TimerHandle``)."""

    def cancel(self) -> None: ...


CallLater = Callable[..., Timer]
"""``(seconds, callback, *args) -> Timer``: calls ``callback(*args)`` after ``seconds``."""


@dataclass(slots=True, eq=False)
class _Member:
    event: Event[Any]
    key: str
    connector: str
    future: asyncio.Future[Run]
    started: float
    created: float


@dataclass(slots=True, eq=False)
class _Batch:
    bh: BoundHandler
    due: float  # wall clock: when it fires at the latest (its timeout)
    members: list[_Member] = field(default_factory=list)
    timer: Timer | None = None


class Batches:
    """The open batches of every batching handler, and the tasks that run full ones.

    Args:
        env: the store, clock, metrics and wall clock.
        endings: records each event's end.

    ``call_later`` times the batches' timeouts: the event loop's by default;
    ``bridge test`` sets one on its hand-moved clock.
    """

    def __init__(self, env: DispatchEnv, endings: Endings) -> None:
        self.env = env
        self.endings = endings
        self._open: dict[tuple[str, str], _Batch] = {}
        self._firing: set[asyncio.Task[None]] = set()
        self._keys: dict[str, Any] = {}
        self.call_later: CallLater | None = None

    def _key(self, bh: BoundHandler, config: BatchConfig, event: Event[Any]) -> str:
        if config.key is None:
            return ""
        program = self._keys.get(config.key)
        if program is None:
            program = self._keys[config.key] = compile_filter(config.key)
        try:
            value = program.execute({"event": event.to_dict()})
        except Exception:  # an event without the field batches with the others like it
            return ""
        return jsonio.dumps(value, default=str).decode()

    async def run(self, event: Event[Any], bh: BoundHandler, key: str, connector: str) -> Run:
        """Add ``event`` to its batch; return its run once the batch is final.

        Raises:
            StoreError: the batch's end could not be recorded.
        """
        config = bh.batch
        if config is None:
            raise RuntimeError(f"{bh.id} does not batch")
        loop = asyncio.get_running_loop()
        ident = (bh.id, self._key(bh, config, event))
        batch = self._open.get(ident)
        if batch is None:
            batch = self._open[ident] = _Batch(bh, self.env.wall() + config.timeout)
            later = self.call_later or loop.call_later
            batch.timer = later(config.timeout, self._close, ident, batch)
        future: asyncio.Future[Run] = loop.create_future()
        member = _Member(event, key, connector, future, self.env.clock.time(), self.env.wall())
        batch.members.append(member)
        if len(batch.members) >= config.max_size:
            self._close(ident, batch)
        elif self.env.history is not None:  # it waits: the UI shows it batched, and until when
            self.env.history.run(
                RunRecord(
                    event.id,
                    bh.id,
                    "batched",
                    error=_waiting(ident[1], len(batch.members), config.max_size),
                    due_at=batch.due,
                )
            )
        try:
            return await future
        except asyncio.CancelledError:
            if member in batch.members and batch.timer is not None:  # not fired: leave it
                batch.members.remove(member)
            raise

    def _close(self, ident: tuple[str, str], batch: _Batch) -> None:
        """Stop ``batch`` taking events and run it."""
        if self._open.get(ident) is batch:
            del self._open[ident]
        if batch.timer is None:
            return  # fired already
        batch.timer.cancel()
        batch.timer = None
        members = [m for m in batch.members if not m.future.done()]
        if not members:
            return
        task = asyncio.get_running_loop().create_task(
            self._fire(batch.bh, members), name=f"batch {batch.bh.id}"
        )
        self._firing.add(task)
        task.add_done_callback(self._firing.discard)

    async def close(self) -> None:
        """Cancel running batches (their events' messages are redelivered)."""
        for batch in list(self._open.values()):
            if batch.timer is not None:
                batch.timer.cancel()
        for task in list(self._firing):
            task.cancel()
        if self._firing:
            await asyncio.wait(list(self._firing))

    async def _fire(self, bh: BoundHandler, members: list[_Member]) -> None:
        try:
            runs = await self._attempts(bh, members)
        except BaseException as exc:  # the store failed, or the bridge stops: nothing recorded
            for m in members:
                if not m.future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        m.future.cancel()
                    else:
                        m.future.set_exception(exc)
            if not isinstance(exc, StoreError | asyncio.CancelledError):
                log.exception("batch failed", extra={"handler": bh.id})
            return
        for m, run in zip(members, runs, strict=True):
            if not m.future.done():
                m.future.set_result(run)

    async def _attempts(self, bh: BoundHandler, members: list[_Member]) -> list[Run]:
        env = self.env
        clock = env.clock
        events = [m.event for m in members]
        handler = bh.handler
        attempts: list[Attempt] = []
        number = 0
        while True:
            number += 1
            began = clock.time()
            ctx = Context(events[0], bh.id, number, env.store, env.wall)
            error: BaseException | None = None
            result: Any = None
            try:
                if not isinstance(handler, BatchHandler):
                    raise Fatal(f"handler {bh.id} cannot take batches")
                async with asyncio.timeout(bh.timeout):
                    if bh.limiter is None:
                        result = await handler.invoke_batch(events, ctx)
                    else:
                        async with bh.limiter:
                            result = await handler.invoke_batch(events, ctx)
                check_result(result)
            except TimeoutError:
                error = TimeoutError(f"batch attempt timed out after {bh.timeout:g}s")
            except (asyncio.CancelledError, StoreError):
                raise
            except Suspended:
                error = Fatal("a batch cannot sleep or wait for an event (ctx.sleep, ...)")
            except Exception as exc:  # the batch's failure: retried or dead-lettered
                error = exc
            states = [self._state(bh, m, attempts, number, began) for m in members]
            endings = self.endings
            if error is None:
                emitted = ctx.emitted
                if emitted and env.emitter is not None:
                    await env.emitter(emitted)
                # One write for the whole batch: all its events are recorded, or none.
                if endings.config.ledger:
                    await env.store.ledger_record(
                        [LedgerEntry(bh.id, s.key, s.event.id, "succeeded", result) for s in states]
                    )
                return [await endings.succeeded(s, result, (), ledger=False) for s in states]
            now = clock.time()
            text = describe(error)
            attempts.append(
                Attempt(number, time.time() - (now - began), now - began, text,
                        format_traceback(error))
            )  # fmt: skip
            if isinstance(error, Fatal) or number >= bh.retry.attempts:
                return [await endings.dead_lettered(s, text, error) for s in states]
            delay = bh.retry.delay(number, env.rng)
            if isinstance(error, RetryAfter):
                delay = max(delay, error.delay)
            env.metrics.inc("bridge_retries_total", bh.labels)
            await clock.sleep(delay)

    @staticmethod
    def _state(
        bh: BoundHandler, m: _Member, attempts: list[Attempt], number: int, began: float
    ) -> RunState:
        return RunState(
            m.event, bh, m.key, m.connector, None, m.started, attempts, number, began, m.created
        )


def _waiting(key: str, size: int, max_size: int) -> str:
    """A batched run's reason: its batch key and how full its batch was when it joined."""
    which = f"batch key {key}" if key else "the handler's batch (no key)"
    return f"waiting in {which}: {size} of {max_size} events; fires when full or at its timeout"
