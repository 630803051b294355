"""A delivery that its first try failed on unexpectedly, or that was held (RETRY_LATER):
tried again after a backoff until it is processed, dead-lettered as an internal error,
or the bridge stops.

Handing a message back at once would have the broker redeliver it at once, again and
again (a hot loop, a stalled partition): a delivery that the store failed (RETRY_LATER)
or that the engine failed on is held, its slot too so intake pauses, and tried again
after a backoff; only a shutdown gives it back. After ``limits.poison_limit``
unexpected failures it is dead-lettered as an internal error.

The first try runs inline in the delivery's task (``Runtime._consume``): only a
delivery that needs this loop pays for its coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from bridge.dispatch import Dispatcher
from bridge.dispatch.storable import describe, format_traceback
from bridge.metrics import Metrics
from bridge.normalize import Normalizer
from bridge.store.contracts import Attempt
from bridge.transport import Delivery, Settlement

log = logging.getLogger("bridge.runtime")


class Held:
    """The retry loop of one source's deliveries.

    Args:
        dispatcher: processes a delivery.
        normalizer: the source's normalizer.
        connector: the source's name (labels, log lines).
        poison_limit: unexpected failures before the delivery is dead-lettered.
        metrics: counts ``bridge_internal_errors_total``.
        stop: set when the bridge stops: the delivery is given back (RETRY_LATER).
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        normalizer: Normalizer,
        connector: str,
        poison_limit: int,
        metrics: Metrics,
        stop: asyncio.Event,
    ) -> None:
        self.dispatcher = dispatcher
        self.normalizer = normalizer
        self.connector = connector
        self.poison_limit = poison_limit
        self.metrics = metrics
        self.stop = stop

    async def outcome(
        self, delivery: Delivery, failed: tuple[Exception, float] | None = None
    ) -> Settlement:
        """How to settle ``delivery`` after a first try that failed (``failed``: its error
        and how long it took) or was held (``failed`` None)."""
        failures: list[Attempt] = []
        outcome = Settlement.RETRY_LATER
        if failed is not None:
            outcome = await self._failed(delivery, failures, *failed)
        clock = time.monotonic
        pause = 0.5
        stop = self.stop
        while True:
            if outcome is not Settlement.RETRY_LATER or stop.is_set():
                return outcome
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            if stop.is_set():
                return Settlement.RETRY_LATER
            pause = min(pause * 2, 10.0)
            t0 = clock()  # its wall-clock start is worked out only if it fails
            try:
                outcome = await self.dispatcher.process(delivery, self.normalizer)
            except Exception as exc:  # an engine bug must not loop nor stall the source
                outcome = await self._failed(delivery, failures, exc, clock() - t0)

    async def _failed(
        self, delivery: Delivery, failures: list[Attempt], exc: Exception, took: float
    ) -> Settlement:
        """Record an unexpected failure; dead-letter the delivery once ``poison_limit``
        were recorded (ACK once stored), else RETRY_LATER."""
        connector = self.connector
        limit = self.poison_limit
        number = len(failures) + 1
        trace = format_traceback(exc)
        failures.append(Attempt(number, time.time() - took, took, describe(exc), trace))
        self.metrics.inc("bridge_internal_errors_total", (("connector", connector),))
        log.error(
            "delivery failed unexpectedly"
            + ("; dead-lettering it" if number >= limit else "; trying it again"),
            extra={
                "connector": connector,
                "attempt": number,
                "error": failures[-1].error,
                "traceback": trace,
            },
        )
        if number >= limit:
            return await self.dispatcher.internal_error(delivery, self.normalizer, failures)
        return Settlement.RETRY_LATER
