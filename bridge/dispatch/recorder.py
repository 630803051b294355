"""Ledger successes written behind their runs: one store call per batch, one wait per delivery.

A run that succeeds notes its ledger entry (``Recorder.note``) and returns at once,
without a store call of its own and without waiting. The entries noted while a write
is under way go in the next one (group commit: one write in flight at a time, at most
``limit`` entries each); an idle recorder writes what was noted in that turn of the
event loop and the next (a delivery's first run ends inline, its siblings, started
then, one turn later: they share the write).

The guarantee is unchanged: a run counts as succeeded (``bridge_runs_total``, its
duration, the run history) only once its entry is written, as before, and its
``Run`` carries the write (``Run.written``), which the fan-out awaits before it
returns, so no message is settled before its runs are recorded.

A write that fails is made again at once, one store call per entry (all sent
together: the store batches them into one round trip again), so that one entry the
store refuses fails only its own run: that run is not counted, and its delivery
fails with the store's error (``StoreError``: left for redelivery, where the ledger
finds the run unrecorded and runs it again; anything else: an engine fault). The
other runs of the batch are recorded and counted as if the first write had passed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bridge.dispatch.runs import Failures, Run, RunState, Written
from bridge.errors import StoreError
from bridge.store.contracts import LedgerEntry

log = logging.getLogger("bridge.dispatch")

_LIMIT = 2000


def unwritten(runs: Sequence[Run]) -> Written | None:
    """A write of ``runs`` still under way, if any (the runs written behind)."""
    for run in runs:
        written = run.written
        if written is not None and not written.done():
            return written
    return None


async def writes_of(runs: Sequence[Run]) -> BaseException | None:
    """Wait for every write of ``runs`` written behind; why one of them was not written
    (None: each was, or none was written behind). The runs of a delivery mostly share
    one write: it is awaited and read once."""
    failed = False
    last = None
    for run in runs:
        written = run.written
        if written is None or written is last:
            continue
        last = written
        if not written.done():
            await written
        if written.exception() is not None or written.result():
            failed = True
    return write_error(runs) if failed else None


def write_error(runs: Sequence[Run]) -> BaseException | None:
    """Why one of ``runs``, written behind, was not written (their writes are done)."""
    for run in runs:
        error = written_error(run)
        if error is not None:
            return error
    return None


def written_error(run: Run) -> BaseException | None:
    """Why ``run``'s entry, written behind it, was not written (its write is done); None
    if it was, or if the run was not written behind."""
    written = run.written
    if written is None:
        return None
    error = written.exception()
    if error is not None:
        return error
    failures = written.result()
    return failures.get(id(run)) if failures else None


class _Batch:
    __slots__ = ("ended", "written")

    def __init__(self, written: Written) -> None:
        self.written = written
        self.ended: list[tuple[RunState, Any, Run]] = []

    def entries(self) -> list[LedgerEntry]:
        """The batch's ledger entries, finished now (when they are written: after every
        attempt of their runs)."""
        now = time.time()
        return [
            LedgerEntry(state.bh.id, state.key, state.event.id, "succeeded", result, now)
            for state, result, _ in self.ended
        ]


class Recorder:
    """Writes noted ledger entries in batches, then counts their runs.

    Args:
        record: writes a batch of entries in one store call (``Ledger.ledger_record``).
        ended: counts and records a run whose entry is written (``Endings.counted``,
            called with no emitted events).
        limit: most entries in one write.
    """

    def __init__(
        self,
        record: Callable[[Sequence[LedgerEntry]], Awaitable[None]],
        ended: Callable[[RunState, Any, Sequence[Any]], object],
        limit: int = _LIMIT,
    ) -> None:
        self._record = record
        self._ended = ended
        self._limit = limit
        self._queued: list[_Batch] = []
        self._task: asyncio.Task[None] | None = None

    def note(self, state: RunState, result: Any, run: Run) -> Written:
        """Queue the ledger entry of ``run``, a success whose attempt returned ``result``,
        for the next write; the write, to await before the run's message is settled."""
        queued = self._queued
        if queued and len(ended := queued[-1].ended) < self._limit:
            ended.append((state, result, run))
            return queued[-1].written
        loop = asyncio.get_running_loop()
        batch = _Batch(Written(loop=loop))
        queued.append(batch)
        if self._task is None:
            self._task = loop.create_task(self._drain(), name="ledger writes")
        batch.ended.append((state, result, run))
        return batch.written

    async def idle(self) -> None:
        """Return once every noted entry was written (or its write failed)."""
        while self._task is not None:
            await asyncio.wait((self._task,))

    async def _drain(self) -> None:
        queued = self._queued
        batch: _Batch | None = None
        try:
            # One turn of the loop more before the first write: the sibling runs started
            # in the turn that noted the first entry end in the next one, and join it.
            # A delivery then waits for one write, not for two.
            await asyncio.sleep(0)
            while queued:
                batch = queued.pop(0)
                failures = await self._write(batch.entries())
                ended = self._ended
                failed: Failures = {}
                for (state, result, run), error in zip(batch.ended, failures, strict=True):
                    if error is not None:
                        failed[id(run)] = error
                        continue
                    try:
                        ended(state, result, ())
                    except Exception:  # counting must not keep the message from settling
                        log.exception("could not count a run", extra={"handler": run.handler})
                batch.written.set_result(failed or None)
                batch = None
        except BaseException:  # cancelled (the loop ends): no delivery may wait for ever
            for left in (*([batch] if batch is not None else []), *queued):
                _fail(left.written, StoreError("store: closed"))
            queued.clear()
            raise
        finally:
            self._task = None

    async def _write(self, entries: list[LedgerEntry]) -> list[BaseException | None]:
        """Write ``entries``; each one's error (None: written). A failed write of several
        is made again with one call per entry, so one bad entry fails only its own run."""
        try:
            await self._record(entries)
        except Exception as exc:
            if len(entries) == 1:
                return [exc]
        else:
            return [None] * len(entries)
        alone = await asyncio.gather(*(self._record([e]) for e in entries), return_exceptions=True)
        # What is not an Exception (a cancellation of one call) fails its run as the store.
        return [
            None if e is None else e if isinstance(e, Exception) else StoreError(f"store: {e!r}")
            for e in alone
        ]


def _fail(written: Written, error: StoreError) -> None:
    """Fail a write; a delivery that stopped waiting for it does not log it as unread."""
    if not written.done():
        written.set_exception(error)
        written.exception()  # marks it retrieved: the deliveries that wait are told
