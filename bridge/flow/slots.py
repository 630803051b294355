"""Singleton slots: at most one run per key, across replicas on a shared store.

A run takes its key's slot in the store (``FlowState.flow_slot_take``) with a
lease. In ``skip`` mode a run that finds the slot held is refused. In ``cancel``
mode it asks the holder to cancel: a holder in this process is cancelled at once;
a holder in another replica learns it when it renews its lease (every
``renew_every`` seconds) and cancels itself; a replica that died leaves a lease
that expires. The new run takes the slot only once it is free, so two runs of
one key never overlap.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
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
    ) -> None:
        self.handler = handler
        self.store = store
        self.wall = wall
        self.sleep = sleep
        self.shared = shared
        self.lease = lease
        self.renew_every = min(1.0, lease / 3)
        self._local: dict[str, Holder] = {}
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)

    async def take(self, key: str, cancel: bool) -> Holder | None:
        """Take the key's slot; None when it is held and ``cancel`` is False."""
        owner = f"{self._prefix}-{next(self._ids)}"
        delay = 0.02
        while True:
            now = self.wall()
            holders = await self.store.flow_slot_take(
                self.handler, key, owner, 1, now, now + self.lease
            )
            if not holders:
                holder = Holder(owner, asyncio.current_task())
                self._local[key] = holder
                return holder
            if not cancel:
                return None
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
        """Run ``start()`` holding the slot; on a shared store, renew its lease meanwhile
        and cancel the run if the slot is lost or its cancellation asked for."""
        if not self.shared:
            return await start()
        keeper = asyncio.get_running_loop().create_task(self._renew(key, holder))
        try:
            return await start()
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
            if lost:
                holder.cancel()
                return
