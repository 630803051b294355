"""The bridge's span processor: the SDK's batch processor, with its export thread nudged.

``Tracing`` (``bridge.tracing``) adds it to its provider; ``bridge.spans`` hands it the
bridge's own spans through ``enqueue``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace.export import BatchSpanProcessor

from bridge.threads import nudge

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan


# Where ``os.register_at_fork`` exists, the SDK's batch processor renews its queue and
# thread in a forked child from that hook; its own per-span process id check (a system
# call a span) is then only needed where the hook does not exist.
_FORK_HOOKED = hasattr(os, "register_at_fork")

NUDGE_EVERY = 128
"""Ended spans between two nudges of the span processor's export thread."""


class NudgingProcessor(BatchSpanProcessor):
    """The SDK's batch span processor (``OTEL_BSP_*`` as ever), nudging its export thread
    every ``NUDGE_EVERY`` ended spans (``bridge.threads``): under load, without the
    nudge, its queue (2,048) overflowed and two spans of three were dropped at 100 %."""

    _ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        super().on_end(span)
        self._ended += 1  # spans ended in other threads may race: a nudge early or late
        if self._ended >= NUDGE_EVERY:
            self._ended = 0
            nudge()

    def enqueue(self, span: ReadableSpan) -> None:
        """``on_end`` of a sampled span (``bridge.spans``): ``BatchProcessor.emit``'s
        steps inline while the queue has room; else (full, shut down, forked without the
        fork hook) its own."""
        batch: Any = self._batch_processor
        queue = batch._queue
        if (
            len(queue) >= batch._max_queue_size
            or batch._shutdown
            or (not _FORK_HOOKED and batch._pid != os.getpid())
        ):
            batch.emit(span)  # drops it, and counts and logs why (or reinitialises)
        else:
            queue.appendleft(span)
            if len(queue) >= batch._max_export_batch_size and not batch._worker_awaken.is_set():
                batch._worker_awaken.set()
        self._ended += 1
        if self._ended >= NUDGE_EVERY:
            self._ended = 0
            nudge()
