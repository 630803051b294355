"""Leased claims: how a source takes work from a store that several processes share.

A source claims a batch of items under a lease, hands them out, renews the
leases of those still held (in flight) every third of a lease, and on settling
finishes an item (ACK) or releases it at once (RETRY_LATER) so that this or
another process takes it again. An item whose holder died is claimed again once
its lease runs out. The inbox and the parked runs both work this way; each
supplies only its store calls, as a ``Claims``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Hashable
from typing import Any, Generic, Protocol, TypeVar

from bridge.transport import Settlement

Item = TypeVar("Item")
Key = TypeVar("Key", bound=Hashable)


async def renew_leases(
    held: Collection[Any],
    extend: Callable[[list[Any], float], Awaitable[None]],
    lease: float,
    wall: Callable[[], float],
) -> None:
    """Every third of ``lease``, extend the leases of what is ``held`` (in flight) by a lease;
    runs until cancelled. A renewal that fails is skipped: a lease that lapses means another
    process may take the item again (a duplicate), never that it is lost."""
    while True:
        await asyncio.sleep(lease / 3)
        if held:
            with contextlib.suppress(Exception):
                await extend(list(held), wall() + lease)


class Claims(Protocol[Item, Key]):
    """The store calls behind one kind of leased item."""

    def key(self, item: Item) -> Key:
        """What identifies ``item`` to ``renew``."""

    async def claim(self, now: float, limit: int, lease: float) -> list[Item]:
        """Claim up to ``limit`` items that no live lease holds, leasing them until ``now + lease``."""

    async def renew(self, keys: list[Key], until: float) -> None:
        """Extend the leases of claimed items to ``until``."""

    async def finish(self, item: Item) -> None:
        """The item was settled with ACK."""

    async def release(self, item: Item) -> None:
        """The item was settled with RETRY_LATER: give it back, to be claimed again."""


class LeasedClaims(Generic[Item, Key]):
    """Claims items under a lease, renews the leases of those held, releases them on settle.

    Args:
        claims: the store calls.
        name: the name of the renewal task.
        batch: most items claimed at once.
        lease: seconds a claimed item stays reserved for this process.
        poll_interval: seconds between claims when the last one was not a full batch.
        wall: wall-clock time (epoch seconds), for claims and renewals.
        log: where a failed claim is reported (the source's logger).
        failure: the message a failed claim is logged with.
    """

    def __init__(
        self,
        claims: Claims[Item, Key],
        *,
        name: str,
        batch: int,
        lease: float,
        poll_interval: float,
        wall: Callable[[], float],
        log: logging.Logger,
        failure: str,
    ) -> None:
        self.claims = claims
        self.name = name
        self.batch = batch
        self.lease = lease
        self.poll_interval = poll_interval
        self.wall = wall
        self.log = log
        self.failure = failure
        self.held: set[Key] = set()
        """Keys of the items claimed and not yet settled; their leases are renewed."""
        self.connected = True
        """False while claims fail (the store is down)."""

    async def claimed(
        self, stopped: asyncio.Event, wakeup: asyncio.Event | None = None
    ) -> AsyncIterator[Item]:
        """Claimed items, until ``stopped`` is set; renews held leases meanwhile.

        After a batch that was not full, waits ``poll_interval`` for ``wakeup`` (new
        items in this process) or ``stopped``. A claim that fails is logged and tried
        again after the wait; it never ends the iteration.
        """
        renew = asyncio.create_task(
            renew_leases(self.held, self.claims.renew, self.lease, self.wall), name=self.name
        )
        try:
            while not stopped.is_set():
                if wakeup is not None:
                    wakeup.clear()
                try:
                    items = await self.claims.claim(self.wall(), self.batch, self.lease)
                    self.connected = True
                except Exception as exc:  # the store may be down; keep trying, report not ready
                    self.connected = False
                    self.log.error(self.failure, extra={"error": str(exc)})
                    items = []
                for item in items:
                    self.held.add(self.claims.key(item))
                    yield item
                if len(items) < self.batch:
                    await _wait(stopped, wakeup, self.poll_interval)
        finally:
            renew.cancel()

    async def settle(self, item: Item, outcome: Settlement) -> None:
        """Stop renewing ``item``'s lease, then finish it (ACK) or release it."""
        self.held.discard(self.claims.key(item))
        if outcome is Settlement.ACK:
            await self.claims.finish(item)
        else:
            await self.claims.release(item)


async def _wait(stopped: asyncio.Event, wakeup: asyncio.Event | None, timeout: float) -> None:
    """Wait up to ``timeout`` for ``stopped`` or ``wakeup``."""
    waiters = [asyncio.ensure_future(stopped.wait())]
    if wakeup is not None:
        waiters.append(asyncio.ensure_future(wakeup.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
