"""Group commit for the ledger: calls from concurrent deliveries share one store round trip.

A ``Lane`` collects the calls made while its previous round trip was under way and
sends them all in the next one (at most ``limit`` at once). An idle lane adds no
waiting beyond one turn of the event loop, so at low load a call costs what it did
alone; under load, batches grow with it and the round trips per event fall.

Every caller still awaits its own call's outcome: a write is answered only once the
transaction that holds it has committed, so nothing is settled before it is durable.
A call that waited past the store's call deadline before its batch was sent is
answered ``StoreError`` without being sent (its caller treats it as a store fault).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.errors import StoreError

_LIMIT = 1000
PATIENCE = 0.05
"""Seconds a group waits for the write before it (``Turns``): longer than a write under
load takes, far shorter than a store's call deadline."""


class Turns:
    """One group write at a time, with patience: a group waits for the write under way
    to end, at most ``patience`` seconds. Behind a write that takes longer (the store is
    slow or hung) it goes beside it, as if there were no turns, so a hung write holds
    the next group for ``patience``, not for its own deadline. No task and no lock: a
    future per write, and a timer only for a group that waits."""

    __slots__ = ("_busy", "_patience")

    def __init__(self, patience: float = PATIENCE) -> None:
        self._patience = patience
        self._busy: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        """Whether a write is under way (``wait`` would wait)."""
        return self._busy is not None

    async def wait(self) -> None:
        """Until no write is under way, or ``patience`` seconds passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._patience
        busy = self._busy
        while busy is not None and (left := deadline - loop.time()) > 0:
            waiter: asyncio.Future[None] = loop.create_future()

            def wake(_: object = None, waiter: asyncio.Future[None] = waiter) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            busy.add_done_callback(wake)
            timer = loop.call_later(left, wake)
            try:
                await waiter
            finally:
                timer.cancel()
                busy.remove_done_callback(wake)
            busy = self._busy  # another group's write may have begun meanwhile

    def begin(self) -> asyncio.Future[None]:
        """Mark a write under way; give the returned future to ``end`` once it ended."""
        self._busy = written = asyncio.get_running_loop().create_future()
        return written

    def end(self, written: asyncio.Future[None]) -> None:
        """The write ``begin`` marked has ended (written or failed)."""
        written.set_result(None)
        if self._busy is written:
            self._busy = None


def count_round_trip(store: Any, operation: str) -> None:
    """Count one store round trip of ``operation`` on ``store`` (and in its metrics)."""
    store.round_trips[operation] += 1
    metrics = store.metrics
    if metrics is not None:
        metrics.inc("bridge_store_round_trips_total", (("operation", operation),))


class Call:
    """One caller's call in a batch: its ``kind``, arguments and the future it awaits."""

    __slots__ = ("args", "future", "kind", "queued")

    def __init__(
        self, kind: str, args: tuple[Any, ...], future: asyncio.Future[Any], queued: float
    ):
        self.kind = kind
        self.args = args
        self.future = future
        self.queued = queued

    def answer(self, value: Any) -> None:
        """Resolve the caller's future with ``value`` (if it still waits)."""
        if not self.future.done():
            self.future.set_result(value)

    def fail(self, error: BaseException) -> None:
        """Resolve the caller's future with ``error`` (if it still waits)."""
        if not self.future.done():
            self.future.set_exception(error)


Flush = Callable[[list[Call]], Awaitable[None]]
"""Sends a batch in one round trip and answers each of its calls (``Call.answer``/``fail``)."""


class Lane:
    """A queue of calls sent in batches, at most ``flights`` batches in flight at a time.

    Args:
        flush: sends a batch; what it leaves unanswered is answered ``StoreError``.
        deadline: seconds a call may wait for its batch to be sent.
        limit: most calls in one batch.
        flights: most batches in flight at once. 1 is group commit; more lets a call
            made while a batch is in flight go at once in a batch of its own loop turn
            (for lookups, which a delivery's handlers wait for).
        patience: seconds a call made while a batch is in flight waits for it to come
            back (and goes in the next batch after it) before a batch of its own leaves
            beside it. 0: at once. Under load, the calls of those seconds share one
            round trip instead of one each turn; when a batch is slow to come back,
            they are held no longer than that.
    """

    def __init__(
        self,
        flush: Flush,
        deadline: float,
        limit: int = _LIMIT,
        flights: int = 1,
        patience: float = 0.0,
    ) -> None:
        self._flush = flush
        self._deadline = deadline
        self._limit = limit
        self._flights = flights
        self._patience = patience
        self._pending: list[Call] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = False  # a batch task is about to take what is pending
        self._beside: asyncio.TimerHandle | None = None  # a batch to leave after patience

    async def call(self, kind: str, *args: Any) -> Any:
        """Queue a call and await its answer.

        Raises:
            StoreError: the store failed the batch, or the call waited past its deadline.
        """
        loop = asyncio.get_running_loop()
        call = Call(kind, args, loop.create_future(), loop.time())
        self._pending.append(call)
        if not self._starting and len(self._tasks) < self._flights:
            if not self._tasks or not self._patience:
                self._start(loop)
            elif self._beside is None:
                self._beside = loop.call_later(self._patience, self._leave_beside, loop)
        return await call.future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._starting = True
        self._tasks.add(loop.create_task(self._drain()))

    def _leave_beside(self, loop: asyncio.AbstractEventLoop) -> None:
        """Patience is over: what is still pending leaves in a batch of its own."""
        self._beside = None
        if self._pending and not self._starting and len(self._tasks) < self._flights:
            self._start(loop)

    async def idle(self) -> None:
        """Return once every queued call was sent and answered."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        live: list[Call] = []
        try:
            while self._pending:
                self._starting = False
                batch, self._pending = self._pending[: self._limit], self._pending[self._limit :]
                late = loop.time() - self._deadline
                live = []
                for call in batch:
                    if call.future.done():
                        continue  # its caller was cancelled
                    if call.queued < late:
                        call.fail(StoreError(f"store: no answer within {self._deadline:g}s"))
                    else:
                        live.append(call)
                if not live:
                    continue
                try:
                    await self._flush(live)
                except Exception as exc:  # the whole batch failed: each caller is told
                    error = exc if isinstance(exc, StoreError) else StoreError(f"store: {exc}")
                    for call in live:
                        call.fail(error)
                unanswered = [call for call in live if not call.future.done()]
                if unanswered:  # no error built for the answered ones: this is the hot path
                    error = StoreError("store: the call was not answered")
                    for call in unanswered:
                        call.fail(error)
        except BaseException:  # cancelled (the loop ends): no caller may wait for ever
            for call in (*live, *self._pending):
                call.fail(StoreError("store: closed"))
            self._pending = []
            raise
        finally:
            # At once, not in a done callback: a call made before that ran would wait
            # for a task that will not take it.
            self._starting = False
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
