"""Leased slots per key, across replicas on a shared store: singletons and concurrency keys.

A run takes one of its key's ``limit`` slots in the store
(``FlowState.flow_slot_take``) with a lease. In ``skip`` mode a run that finds them
held is refused; in ``wait`` mode (concurrency keys) it waits, polling, until one is
free. In ``cancel`` mode (a singleton) it asks the holder to cancel: a holder in
this process is cancelled at once; a holder in another replica learns it when it
renews its lease (every ``renew_every`` seconds) and cancels itself; a replica that
died leaves a lease that expires. The new run takes the slot only once it is free,
so two runs of one key never overlap.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bridge.store.contracts.flow import FlowState

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class Holder:
    """A run holding a slot: its task, and whether it was asked to cancel."""

    owner: str
    task: asyncio.Task[Any] | None
    cancelled: bool = False
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def cancel(self) -> None:
        """Cancel the holding run (its admission turns it into a ``cancelled`` run)."""
        if not self.cancelled and self.task is not None:
            self.cancelled = True
            self.task.cancel()


class Slots:
    """The singleton slots of one handler.

    Args:
        handler: the handler id.
        store: where slots are leased.
        wall: wall-clock time.
        sleep: the engine clock's sleep.
        shared: the store is shared by replicas (leases are renewed, remote holders polled).
        lease: seconds a slot stays leased without renewal.
    """

    def __init__(
        self,
        handler: str,
        store: FlowState,
        wall: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        *,
        shared: bool,
        lease: float = 30.0,
        limit: int = 1,
        renew_every: float = 1.0,
    ) -> None:
        self.handler = handler
        self.store = store
        self.wall = wall
        self.sleep = sleep
        self.shared = shared
        self.lease = lease
        self.limit = limit
        self.renew_every = min(renew_every, lease / 3)
        self._local: dict[str, Holder] = {}
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)

    async def take(self, key: str, mode: str) -> Holder | None:
        """Take a slot of the key; None when they are held and ``mode`` is ``skip``.

        ``wait``: poll until one is free; ``cancel``: cancel the holder, then take it.
        """
        owner = f"{self._prefix}-{next(self._ids)}"
        delay = 0.02
        while True:
            now = self.wall()
            holders = await self.store.flow_slot_take(
                self.handler, key, owner, self.limit, now, now + self.lease
            )
            if not holders:
                holder = Holder(owner, asyncio.current_task())
                self._local[key] = holder
                return holder
            if mode == "skip":
                return None
            if mode == "wait":
                await self.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            local = self._local.get(key)
            if local is not None and local.owner in holders:
                local.cancel()
                await local.released.wait()
                continue
            await self.store.flow_slot_cancel(self.handler, key, holders)
            await self.sleep(delay)
            delay = min(delay * 2, self.renew_every)

    async def release(self, key: str, holder: Holder) -> None:
        """Give the slot back and wake a run waiting for it here."""
        try:
            await self.store.flow_slot_release(self.handler, key, holder.owner)
        finally:
            if self._local.get(key) is holder:
                del self._local[key]
            holder.released.set()

    async def hold(self, key: str, holder: Holder, start: Callable[[], Awaitable[T]]) -> T:
        """Run ``start()`` holding the slot (see ``kept``)."""
        async with self.kept(key, holder):
            return await start()

    @asynccontextmanager
    async def kept(self, key: str, holder: Holder) -> AsyncIterator[None]:
        """On a shared store, renew the slot's lease while the block runs; a singleton's
        run is cancelled if its slot is lost or its cancellation asked for."""
        if not self.shared:
            yield
            return
        keeper = asyncio.get_running_loop().create_task(self._renew(key, holder))
        try:
            yield
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _renew(self, key: str, holder: Holder) -> None:
        while True:
            await self.sleep(self.renew_every)
            try:
                lost = await self.store.flow_slot_renew(
                    self.handler, [(key, holder.owner)], self.wall() + self.lease
                )
            except Exception:  # the store is down: the lease may lapse; keep trying
                continue
            if lost and self.limit == 1:  # a singleton's slot: cancelled or taken over
                holder.cancel()
                return
