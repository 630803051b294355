"""The scheduler: parked retries, in every bridge process.

``ParkedSource`` is a source like any broker's: it claims parked runs that are
due (a lease in the store, so two replicas never run the same one at once; no
more than its free in-flight slots, each lease renewed while held) and
yields each as a delivery for its one handler, resuming at its next attempt.
The dispatcher forgets the parked run when it becomes final or parks it again;
a delivery left for redelivery (shutdown) releases its lease, and a process
that dies mid-run leaves a lease that expires, so the run is claimed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from functools import partial
from typing import Any

import bridge.jsonio as jsonio
from bridge.leases import LeasedClaims
from bridge.metrics import Metrics
from bridge.store.contracts import ParkedRun, ParkedRuns
from bridge.transport import ConnectorStatus, Delivery, Settlement

log = logging.getLogger("bridge.scheduler")
_CE_JSON = {"content-type": "application/cloudevents+json"}


class _ParkedClaims:
    """The parked runs' store calls for ``LeasedClaims``: runs by id."""

    # The dispatcher lets go of a run too (parks it again, or forgets it): a run this
    # holder cannot renew was not necessarily taken over.
    exclusive = False

    def __init__(self, store: ParkedRuns) -> None:
        self.store = store

    def key(self, item: ParkedRun) -> str:
        return item.id

    async def claim(self, now: float, limit: int, lease: float, owner: str) -> list[ParkedRun]:
        return await self.store.parked_claim(now, limit, lease, owner)

    async def renew(self, keys: list[str], until: float, owner: str) -> list[str]:
        # until=0 (RETRY_LATER: shutdown, store trouble) gives the run back, due now, unless
        # it was parked again, forgotten or taken over meanwhile.
        return await self.store.parked_renew(keys, until, owner)

    async def finish(self, item: ParkedRun, owner: str) -> bool:
        # The dispatcher forgets (or parks again) a run that ran: nothing to do here.
        return True


class ParkedSource:
    """Yields parked runs that are due as deliveries.

    Args:
        store: where runs are parked.
        name: the source's name (metrics, logs).
        poll_interval: seconds between looks for due runs.
        batch: most runs claimed at once.
        lease: seconds a claimed run stays reserved for this process.
        wall: wall-clock time (epoch seconds).
        capacity: most runs claimed and not yet settled: the consumer's in-flight slots.
            Default: ``batch``.
        metrics: where failed renewals are counted.
    """

    def __init__(
        self,
        store: ParkedRuns,
        *,
        name: str = "scheduler",
        poll_interval: float = 1.0,
        batch: int = 64,
        lease: float = 30.0,
        wall: Callable[[], float] = time.time,
        capacity: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.poll_interval = poll_interval
        self.batch = batch
        self.lease = lease
        self.wall = wall
        self._stopped = asyncio.Event()
        self._released = False
        self._claims = LeasedClaims(
            _ParkedClaims(store),
            name=name,
            batch=batch,
            capacity=capacity,
            metrics=metrics,
            lease=lease,
            poll_interval=poll_interval,
            wall=wall,
            log=log,
            failure="cannot claim parked runs",
        )

    async def start(self) -> None:
        self._stopped.clear()
        if not getattr(self.store, "shared", False) and not self._released:
            # One process per store: leases left by a process that died are stale.
            await self.store.parked_lease(None, 0.0)
            self._released = True

    async def deliveries(self) -> AsyncIterator[Delivery]:
        async for run, ticket in self._claims.claimed(self._stopped):
            yield self._delivery(run, ticket)

    def _delivery(self, run: ParkedRun, ticket: int = 0) -> Delivery:
        meta: dict[str, Any] = {
            "message_id": run.event.get("id"),
            "replay_handler": run.handler,
            "resume_attempt": run.attempt,
            "resume_attempts": [asdict(a) for a in run.attempts],
            "resume_created": run.created_at,
            "connector": run.connector,
            "parked_id": run.id,
        }
        if run.admission is not None:
            meta["resume_admission"] = run.admission
        return Delivery(
            jsonio.dumps(run.event), _CE_JSON, meta, partial(self._settle, run, ticket), self.name
        )

    async def _settle(self, run: ParkedRun, ticket: int, outcome: Settlement) -> None:
        await self._claims.settle(run, ticket, outcome)

    async def stop(self, deadline: float) -> None:
        self._stopped.set()
        self._claims.stop()

    def status(self) -> ConnectorStatus:
        return ConnectorStatus(
            self._claims.connected, lag={"in_flight": float(len(self._claims.held))}
        )
