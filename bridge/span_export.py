"""The bridge's span processor: the SDK's batch processor, with its export thread nudged.

``Tracing`` (``bridge.tracing``) adds it to its provider; ``bridge.spans`` hands it the
bridge's own spans through ``enqueue``.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bridge.threads import nudge

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter


# Where ``os.register_at_fork`` exists, the SDK's batch processor renews its queue and
# thread in a forked child from that hook; its own per-span process id check (a system
# call a span) is then only needed where the hook does not exist.
_FORK_HOOKED = hasattr(os, "register_at_fork")

NUDGE_EVERY = 128
"""Ended spans between two nudges of the span processor's export thread while it exports."""

LATE_WAIT = 0.1
"""Longest the loop waits (seconds) for an export thread that is late to a crowded queue."""


class NudgingProcessor(BatchSpanProcessor):
    """The SDK's batch span processor (``OTEL_BSP_*`` as ever), nudging its export thread
    (``bridge.threads``) when it wakes it for a full batch, and every ``NUDGE_EVERY``
    ended spans while it exports: under load, without the nudge, its queue (2,048)
    overflowed and two spans of three were dropped at 100 %. A thread asleep until its
    next batch (woken at 512 spans, or after ``OTEL_BSP_SCHEDULE_DELAY``) cannot take the
    GIL, so it is not nudged: a nudge is a ``sleep(0)``, which slept 75 µs here (the
    kernel's timer slack), and nudging every 128 spans whatever the thread did cost
    0.6 µs a span, a twentieth of a traced delivery's time at 100 % sampling.

    A nudge hands the GIL only to a thread that is already on a core. On a machine
    busy with other processes the woken export thread may not be, and the loop filled
    the queue before it ran: a few hundred spans of 30,000 were dropped. So when the
    queue is three quarters full and the export thread has not started exporting
    since it was woken, the loop sleeps (its core and the GIL free) until the thread
    starts, at most ``LATE_WAIT`` once until the queue drains. A thread that is
    exporting is never waited for: a slow or unreachable collector drops spans, as
    the SDK does, and does not slow the deliveries.
    """

    _ended = 0
    _gave_up = False  # a wait ran out: no other until the queue has drained below crowded

    def __init__(self, exporter: SpanExporter, **options: Any) -> None:
        super().__init__(exporter, **options)
        batch: Any = self._batch_processor
        size = batch._max_queue_size  # a wait wakes the thread, which exports whole batches
        self._crowded = min(size, max(size - size // 4, batch._max_export_batch_size))

    def on_end(self, span: ReadableSpan) -> None:
        batch: Any = self._batch_processor
        asleep = not batch._worker_awaken.is_set()
        super().on_end(span)
        if asleep and batch._worker_awaken.is_set():
            self._woken()
            return
        self._ended += 1  # spans ended in other threads may race: a nudge early or late
        if self._ended >= NUDGE_EVERY:
            self._counted(batch)

    def enqueue(self, span: ReadableSpan) -> None:
        """``on_end`` of a sampled span (``bridge.spans``): ``BatchProcessor.emit``'s
        steps inline while the queue is not crowded; else (crowded, shut down, forked
        without the fork hook) a wait for a late export thread, then its own."""
        batch: Any = self._batch_processor
        queue = batch._queue
        stale = batch._shutdown or (not _FORK_HOOKED and batch._pid != os.getpid())
        if stale or len(queue) >= self._crowded:
            if not (stale or self._gave_up or batch._export_lock.locked()):
                self._gave_up = not self._wait_for_export(batch)
            batch.emit(span)  # appends it, or drops it and counts and logs why
        else:
            queue.appendleft(span)
            if len(queue) >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
                batch._worker_awaken.set()
                self._woken()
                return
        self._ended += 1
        if self._ended >= NUDGE_EVERY:
            self._counted(batch)

    def _woken(self) -> None:
        """The export thread was just woken for a full batch: it takes the GIL now."""
        self._ended = 0
        nudge()

    def _counted(self, batch: Any) -> None:
        """``NUDGE_EVERY`` spans ended: a wait given up is allowed again once the queue has
        drained, and the export thread is nudged if it exports (it may be waiting for the
        GIL; asleep until its next batch, it cannot take it)."""
        self._ended = 0
        if self._gave_up and len(batch._queue) < self._crowded:
            self._gave_up = False
        if batch._export_lock.locked():
            nudge()

    def _wait_for_export(self, batch: Any) -> bool:
        """Sleep until the export thread has started on a crowded queue, or ``LATE_WAIT``."""
        batch._worker_awaken.set()
        deadline = time.monotonic() + LATE_WAIT
        while len(batch._queue) >= self._crowded and not batch._shutdown:
            if time.monotonic() >= deadline:
                return False
            started = batch._export_lock.locked()
            time.sleep(0.0005)
            if started:
                break  # it pops a batch at a time: not waited for to the end
        return True
