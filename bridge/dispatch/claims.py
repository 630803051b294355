"""Keeping a process's ledger claims alive while their runs wait or run.

On a store that replicas share, the fan-out claims a run in the ledger before the
run's admission step (``LedgerClaims``) with a deadline of the handler's longest
run. A run may wait longer than that before its first attempt: for a singleton or
concurrency key another replica holds, a throttle's start time, a retry budget or a
``concurrency`` slot. Once its claim lapsed, a redelivered copy of its message in
another replica could claim and run it too. ``ClaimKeeper`` renews the claims of
the runs in flight in this process that may wait so: every ``every`` seconds (a third
of the shortest lease held), one statement extends all of them
(``FlowState.flow_claims_extend``), so a claim lapses only when its process is gone
(or cannot reach the store) for a whole lease. A run that cannot wait past its lease
(no admission step, no concurrency limit, no inline retry longer than its policy's
longest delay: ``FanOut._waits``) is not held: its lease is its attempts, timeouts and
backoffs, plus a minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.store.contracts.flow import FlowState

log = logging.getLogger("bridge.dispatch")
Pair = tuple[str, str]


class ClaimKeeper:
    """Renews the ledger claims that ``owner`` holds for runs in flight.

    Args:
        store: the shared store holding the claims.
        owner: this process, as the owner of its claims.
        wall: wall-clock time (claims' deadlines are wall-clock).
    """

    def __init__(self, store: FlowState, owner: str, wall: Callable[[], float]) -> None:
        self.store = store
        self.owner = owner
        self.wall = wall
        self._held: dict[Pair, list[float]] = {}  # pair -> leases of its holders
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0

    @asynccontextmanager
    async def kept(self, pair: Pair, lease: float) -> AsyncIterator[None]:
        """Renew the claim on ``pair`` (``lease`` seconds at a time) while the block runs."""
        self.hold(pair, lease)
        try:
            yield
        finally:
            self.drop(pair, lease)

    def hold(self, pair: Pair, lease: float) -> None:
        """Renew the claim on ``pair``, ``lease`` seconds at a time, until ``drop``."""
        self._held.setdefault(pair, []).append(lease)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._renew())

    def drop(self, pair: Pair, lease: float) -> None:
        """Stop renewing the claim that ``hold(pair, lease)`` kept."""
        leases = self._held.get(pair)
        if leases is not None:
            leases.remove(lease)
            if not leases:
                del self._held[pair]

    async def _renew(self) -> None:
        while self._held:
            await asyncio.sleep(min(min(ls) for ls in self._held.values()) / 3)
            held = {pair: max(ls) for pair, ls in self._held.items()}
            if not held:
                return
            now = self.wall()
            try:
                await self.store.flow_claims_extend(
                    list(held), self.owner, [now + lease for lease in held.values()]
                )
                self.renewals += 1
            except Exception as exc:  # the claims may lapse; keep trying
                log.warning("could not renew run claims", extra={"error": str(exc)})

    async def close(self) -> None:
        """Stop renewing."""
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
