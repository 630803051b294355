"""Runs a built bridge and supervises it: one pump per source, background work, the
server, and the drain on shutdown. What it runs is built by ``bridge.app.assembly``.

Shutdown (SIGTERM, SIGINT, ``request_stop``, or a part that failed for good): stop
intake first (no delivery is taken or started after the drain begins; sources that
receive in the background stop receiving), let in-flight deliveries finish within
``drain_timeout``, settle what finished, cancel the rest (their deliveries are settled
RETRY_LATER and will be redelivered), stop every source (Kafka commits its finished
prefix), close publishers and the store last. A second signal skips the wait. After a
part failed for good, ``run()`` raises its error once all that is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Mapping
from typing import Any, cast

from bridge.app.assembly import Assembly, SourceSlot
from bridge.app.held import Held
from bridge.clock import Clock
from bridge.config import BridgeConfig, Kinds
from bridge.errors import ConnectorError
from bridge.inbox import InboxSource
from bridge.store import Store
from bridge.store.sqlite.connection import SqliteConnection
from bridge.transport import (
    Background,
    ConnectorStatus,
    Delivery,
    HasStatus,
    Settlement,
    StopsIntake,
)

log = logging.getLogger("bridge.runtime")
# Intake lets the deliveries it started run after this many in a row: a source with a
# backlog (a broker's batch, a memory topic) yields them without waiting, and taking
# max_in_flight of them before any runs keeps them all half-done in memory at once.
INTAKE_RUN = 16


class Runtime(Assembly):
    """A configured bridge, run and supervised: intake, drain and close.

    Args:
        cfg: the validated config.
        kinds: the connector and handler kinds to build it with; default
            ``default_kinds()``.
        store: use this store instead of the one named in the config (tests).
        clock: the dispatcher's clock (tests).
    """

    def __init__(
        self,
        cfg: BridgeConfig,
        *,
        kinds: Kinds | None = None,
        store: Store | None = None,
        clock: Clock | None = None,
        span_exporter: Any = None,
    ) -> None:
        super().__init__(cfg, kinds=kinds, store=store, clock=clock, span_exporter=span_exporter)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._ready = False
        self._failures: list[Exception] = []
        self.loop_lag = 0.0
        self.server: Any = None

    @property
    def ready(self) -> bool:
        """Running, and every source that ``readiness.connectors`` names connected."""
        named = self.cfg.readiness.connectors
        counted = [
            s for s in self.slots if named == "all" or (isinstance(named, list) and s.name in named)
        ]
        return self._ready and all(s.status().connected for s in counted)

    def statuses(self) -> Mapping[str, ConnectorStatus]:
        return {s.name: s.status() for s in self.slots}

    def request_stop(self) -> None:
        """Begin a graceful stop; a second call skips waiting for in-flight runs."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def run(self) -> None:
        """Run until ``request_stop`` or until a part fails for good; then drain and close.

        A part that fails for good (a source's non-retriable ``ConnectorError``, a
        background task's error) stops the bridge the way a SIGTERM does: intake stops
        everywhere, in-flight deliveries drain within ``drain_timeout`` and are settled,
        every source is stopped (Kafka commits its finished prefix), the store closes
        last. Then its error is raised.

        Raises:
            ExceptionGroup: the errors of the parts that failed for good, after the drain.
            ConnectorError: a publisher could not start (nothing was consumed).
        """
        if self.dispatcher is None:
            self.build()
        if isinstance(self.store, SqliteConnection):
            self.store.exclusive()  # one bridge per SQLite file: a second one refuses to start
        await self.store.open()
        try:
            await self._start_publishers()
            if self.cfg.server.enabled:
                from bridge.server import Server

                self.server = Server(self)
                await self.server.start()
            await self._supervise()
        finally:
            await self._close()
        if self._failures:
            reasons = "; ".join(str(exc) for exc in self._failures)
            raise ExceptionGroup(f"failed for good: {reasons}", self._failures)

    async def _supervise(self) -> None:
        """Run intake and background work until the stop, then stop intake and drain."""
        async with asyncio.TaskGroup() as group:
            intake = [
                group.create_task(self._guarded(self._pump(slot)), name=f"pump:{slot.name}")
                for slot in self.slots
            ]
            chores = [group.create_task(self._guarded(self._housekeeping()), name="housekeeping")]
            chores.extend(
                group.create_task(self._guarded(ingress.run()), name=f"background:{name}")
                for name, ingress in self.ingresses.items()
                if isinstance(ingress, Background)
            )
            chores.extend(
                group.create_task(self._guarded(work.run()), name=f"background:{type_name}")
                for type_name, work in self.backgrounds.items()
            )
            if self.history is not None:
                await self.history.start()
            chores.append(group.create_task(self._watch_loop_lag(), name="loop-lag"))
            self._ready = True
            log.info(
                "bridge running",
                extra={
                    "sources": [s.name for s in self.slots],
                    "handlers": list(self.handlers),
                    "listen": self.cfg.server.listen if self.cfg.server.enabled else None,
                },
            )
            await self._stop.wait()
            self._ready = False
            log.info("stopping: intake closed, draining in-flight runs")
            # Intake first: no delivery is taken or started once the drain has begun.
            for task in (*intake, *chores):
                task.cancel()
            await asyncio.gather(*intake, return_exceptions=True)
            # Sources stop receiving while in-flight runs drain (a long poll may take a while).
            await self._drain(asyncio.ensure_future(self._stop_intake()))

    async def _guarded(self, work: Awaitable[None]) -> None:
        """Run ``work``; an error it ends with stops the bridge (with a drain) instead of
        tearing the task group down around deliveries still in flight."""
        try:
            await work
        except Exception as exc:
            self._failures.append(exc)
            log.error("stopping: a part failed for good", extra={"error": str(exc)})
            self._stop.set()

    async def _stop_intake(self) -> None:
        """Tell the sources that receive in the background to stop receiving."""
        sources = [s for s in self.slots if isinstance(s.source, StopsIntake)]
        results = await asyncio.gather(
            *(cast(StopsIntake, s.source).stop_intake() for s in sources),
            return_exceptions=True,
        )
        for slot, result in zip(sources, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "source did not stop its intake cleanly",
                    extra={"connector": slot.name, "error": str(result)},
                )

    async def _start_publishers(self) -> None:
        for name, publisher in self.publishers.items():
            start = getattr(publisher, "start", None)
            if start is not None:
                try:
                    await start()
                except ConnectorError as exc:
                    log.error(
                        "publisher did not start", extra={"connector": name, "error": str(exc)}
                    )
                    raise

    async def _pump(self, slot: SourceSlot) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                await slot.source.start()
                slot.started = True
                slot.error = ""
                backoff = 0.5
                await self._consume(slot)
                if self._stop.is_set():
                    return
                slot.error = "source ended"
            except ConnectorError as exc:
                slot.error = str(exc)
                log.error("source failed", extra={"connector": slot.name, "error": str(exc)})
                if not exc.retriable:
                    raise
            slot.started = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, 30.0)

    async def _consume(self, slot: SourceSlot) -> None:
        limit = slot.limit  # the slot's, not this start's: old deliveries may still hold some
        dispatcher = self.dispatcher
        if dispatcher is None:
            raise RuntimeError("build() first")
        normalizer = slot.normalizer
        metrics = self.metrics
        in_flight = (("connector", slot.name),)
        tasks = slot.tasks

        stop = self._stop
        clock = time.monotonic
        # Taken once: ``asyncio.create_task`` and ``asyncio.current_task()`` each ask for
        # the running loop, which on Python 3.11 makes a system call (``getpid``, its
        # check for a fork): two a delivery, about 0.2 µs each.
        loop = asyncio.get_running_loop()
        held = Held(dispatcher, normalizer, slot.name, self.cfg.limits.poison_limit, metrics, stop)

        async def process(delivery: Delivery) -> None:
            metrics.add("bridge_in_flight", in_flight, 1)
            outcome = Settlement.RETRY_LATER
            try:
                # The first try inline: the retry loop (``Held``) only for a delivery that
                # failed or was held, not a coroutine more for every one.
                t0 = clock()
                try:
                    outcome = await dispatcher.process(delivery, normalizer)
                except Exception as exc:  # an engine bug must not loop nor stall the source
                    outcome = await held.outcome(delivery, (exc, clock() - t0))
                else:
                    if outcome is Settlement.RETRY_LATER and not stop.is_set():
                        outcome = await held.outcome(delivery)
            except asyncio.CancelledError:
                outcome = Settlement.RETRY_LATER
                raise
            finally:
                limit.release()
                metrics.add("bridge_in_flight", in_flight, -1)
                try:
                    await delivery.settle(outcome)
                except Exception as exc:  # the transport will redeliver what it did not settle
                    log.error("settle failed", extra={"connector": slot.name, "error": str(exc)})
                finally:
                    # Its own last step, rather than a done callback: one loop callback
                    # less per delivery (one cancelled before it started stays till the drain).
                    tasks.discard(asyncio.current_task(loop))

        deliveries = slot.source.deliveries()
        started = 0
        try:
            async for delivery in deliveries:
                await limit.acquire()
                tasks.add(loop.create_task(process(delivery)))
                started += 1
                if started % INTAKE_RUN == 0:
                    # The started deliveries run before more are taken: a small working
                    # set (cache, collector) and the first handlers run sooner.
                    await asyncio.sleep(0)
        finally:
            aclose = getattr(deliveries, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _drain(self, intake_stopping: asyncio.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.drain_timeout
        tasks = {t for s in self.slots for t in s.tasks}
        if tasks:
            force = asyncio.ensure_future(self._force.wait())
            _, pending = await _wait_all_or(tasks, force, self.cfg.drain_timeout)
            force.cancel()
            if pending:
                log.warning(
                    "drain timeout: unfinished deliveries left for redelivery",
                    extra={"count": len(pending)},
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        # Sources close side by side: the shutdown budget does not grow with their number.
        close_by = max(deadline, loop.time() + 5.0)
        if not intake_stopping.done():
            # A second signal does not wait for long polls either: stop() cuts them short.
            until = loop.time() + 1.0 if self._force.is_set() else close_by
            await asyncio.wait({intake_stopping}, timeout=max(until - loop.time(), 0.0))
            intake_stopping.cancel()
            await asyncio.gather(intake_stopping, return_exceptions=True)
        results = await asyncio.gather(
            *(slot.source.stop(close_by) for slot in self.slots), return_exceptions=True
        )
        for slot, result in zip(self.slots, results, strict=True):
            if isinstance(result, BaseException):
                log.error(
                    "source did not stop cleanly",
                    extra={"connector": slot.name, "error": str(result)},
                )

    async def _close(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.close()
        if self.history is not None:
            await self.history.close()
        if self.server is not None:
            await self.server.stop()
        for name, publisher in self.publishers.items():
            close = getattr(publisher, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception as exc:  # keep closing the rest
                    log.error(
                        "publisher did not close cleanly",
                        extra={"connector": name, "error": str(exc)},
                    )
        for bound in self.handlers.values():
            close = getattr(bound.handler, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
        await self.store.close()
        self.tracing.shutdown()
        if self.otlp_metrics is not None:  # its last push is a blocking HTTP call
            await asyncio.to_thread(self.otlp_metrics.shutdown)
        log.info("bridge stopped")

    async def _watch_loop_lag(self) -> None:
        """Measure how late the event loop wakes a sleeper; /healthz fails when it is wedged."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(1.0)
            self.loop_lag = max(0.0, loop.time() - before - 1.0)
            self.metrics.set("bridge_event_loop_lag_seconds", (), self.loop_lag)

    async def _housekeeping(self) -> None:
        while True:
            # The figures /readyz answers with, for alerts on readiness flapping.
            try:
                store_ok = await self.store.ping()  # also sets bridge_store_up
            except Exception:  # a ping answers False when the store is down; never stop here
                store_ok = False
            self.metrics.set("bridge_ready", (), 1.0 if self.ready and store_ok else 0.0)
            for slot in self.slots:
                up = 1.0 if slot.status().connected else 0.0
                self.metrics.set("bridge_connector_up", (("connector", slot.name),), up)
            for slot in self.slots:
                if isinstance(slot.source, InboxSource):
                    with contextlib.suppress(Exception):
                        await slot.source.purge()
                if isinstance(slot.source, HasStatus):
                    for part, value in slot.source.status().lag.items():
                        self.metrics.set(
                            "bridge_source_lag", (("connector", slot.name), ("part", part)), value
                        )
            await asyncio.sleep(5.0)


def tune_gc() -> None:
    """Move what start-up built out of the collector's way and collect less often.

    The bridge allocates many short-lived objects per message; with the default
    thresholds the collector runs every few messages and its generation-2 passes over
    the modules and config built at start-up pause the loop for 50-100 ms. Measured
    with the benchmark suite: about a quarter less CPU per event.

    The young generation's threshold sits above what the deliveries in flight hold
    (1,000 deliveries of 4 runs waiting on a store's round trip: 40,000-70,000 tracked
    objects). Below it, as at 10,000, the collector ran every few hundred events to walk
    objects that were all alive, and found nothing: 15-35 µs an event on PostgreSQL,
    5-15 on SQLite. A delivery, failed or not, leaves no cycle behind, so the threshold
    holds no garbage back.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)  # for the bridge's own process, not a test runner's


async def _wait_all_or(
    tasks: set[asyncio.Task[None]], force: asyncio.Future[Any], timeout: float
) -> tuple[set[asyncio.Task[None]], set[asyncio.Task[None]]]:
    """Wait for every task, until ``timeout`` or until ``force`` completes."""
    all_done = asyncio.ensure_future(asyncio.wait(tasks))
    try:
        await asyncio.wait({all_done, force}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        all_done.cancel()
    done = {t for t in tasks if t.done()}
    return done, tasks - done
