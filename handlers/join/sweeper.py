"""The join handler's background work: joins past their deadline, and old join state.

``JoinSweeper`` closes joins whose deadline passed, once across replicas, and
forgets buffered join members and closed joins that are past keeping. The
runtime runs it (``background``, the join kind's hook) once the store is open
and cancels it when intake stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from bridge.handling import HandlerEnv
from bridge.store.contracts import InboxEntry, Join, Store

# The sweeper ran in the scheduler before it moved beside the join handler; its log
# lines keep their logger.
log = logging.getLogger("bridge.scheduler")


class JoinOwner(Protocol):
    """A join handler: builds the event that reports a join's outcome."""

    def outcome_entry(self, join: Join, status: str) -> InboxEntry: ...


class JoinSweeper:
    """Times out joins past their deadline and purges join state past keeping.

    Args:
        store: where joins live.
        owners: join handlers by id.
        wake: called when an outcome event was put in the inbox.
        keep_closed: seconds a closed join is kept (late members find it closed).
    """

    def __init__(
        self,
        store: Store,
        owners: Mapping[str, JoinOwner],
        wake: Callable[[], None],
        *,
        poll_interval: float = 1.0,
        keep_closed: float = 7 * 86_400.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.owners = dict(owners)
        self.wake = wake
        self.poll_interval = poll_interval
        self.keep_closed = keep_closed
        self.wall = wall
        self._last_purge = 0.0

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # the store may be down: try again next round
                log.error("join sweep failed", extra={"error": str(exc)})
            await asyncio.sleep(self.poll_interval)

    async def sweep(self) -> int:
        """Close due joins as timed out; returns how many this process closed."""
        now = self.wall()
        closed = 0
        for join in await self.store.join_due(now, 100):
            owner = self.owners.get(join.handler)
            if owner is None:
                continue
            entry = owner.outcome_entry(join, "timed_out")
            if await self.store.join_close(join.id, "timed_out", entry):
                closed += 1
                log.info(
                    "join timed out",
                    extra={
                        "handler": join.handler,
                        "join_id": join.id,
                        "members": len(join.members),
                    },
                )
        if closed:
            self.wake()
        if now - self._last_purge > 60.0:
            self._last_purge = now
            await self.store.join_purge(now, now - self.keep_closed)
        return closed


def background(handlers: Mapping[str, Any], env: HandlerEnv) -> JoinSweeper:
    """The join kind's background work: one sweeper over the built join handlers by id.

    Raises:
        RuntimeError: the runtime gave no store (joins live in the store).
    """
    if env.store is None:
        raise RuntimeError("the join sweeper needs the bridge's store")
    return JoinSweeper(env.store, handlers, env.wake)
