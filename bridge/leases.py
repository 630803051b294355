"""Leased claims: how a source takes work from a store that several processes share.

A source claims items under a lease, never more than its free capacity (the
consumer's free in-flight slots), hands them out, and every third of a lease
renews the leases of everything it holds: handed out and still running, or
claimed and not yet handed out. On settling it finishes an item (ACK) or releases
it at once (RETRY_LATER) so that this or another process takes it again. An item
whose holder died is claimed again once its lease runs out.

Each source leases its items to an owner token of its own (random, per source
instance). Renewing, finishing and releasing act only where the store still names
that token, so a holder whose lease lapsed (renewals failed for a whole lease: the
store was unreachable, the process stalled) and was taken over by another holder
finds out: it stops renewing, and its late result is not settled over the new
holder's (logged and counted in ``bridge_lease_lost_total``). An item the source
claims again itself after its lease lapsed supersedes the earlier claim the same
way (each claim has a ticket). Failed renewals are logged and counted in
``bridge_lease_renewal_failures_total``.

The inbox and the parked runs both work this way; each supplies only its store
calls, as a ``Claims``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Generic, Protocol, TypeVar

from bridge.metrics import Metrics
from bridge.transport import Settlement

Item = TypeVar("Item")
Key = TypeVar("Key", bound=Hashable)


class Claims(Protocol[Item, Key]):
    """The store calls behind one kind of leased item."""

    exclusive: bool
    """True when only the holder changes a claimed item's lease, so an item it can no
    longer renew or settle was taken over by another holder (its lease was lost). False
    when something else may also let go of it (the dispatcher parks a run again)."""

    def key(self, item: Item) -> Key:
        """What identifies ``item`` to ``renew``."""

    async def claim(self, now: float, limit: int, lease: float, owner: str) -> list[Item]:
        """Claim up to ``limit`` items that no live lease holds, leasing them to ``owner``
        until ``now + lease``."""

    async def renew(self, keys: list[Key], until: float, owner: str) -> list[Key]:
        """Extend to ``until`` (``0``: release) the leases that ``owner`` still holds;
        returns their keys."""

    async def finish(self, item: Item, owner: str) -> bool:
        """The item was settled with ACK; False when ``owner`` no longer held it."""


class LeasedClaims(Generic[Item, Key]):
    """Claims items under a lease, renews the leases of those held, releases them on settle.

    Args:
        claims: the store calls.
        name: the source's name (the renewal task's name, metric labels).
        batch: most items claimed at once.
        capacity: most items held at once (claimed and not yet settled); the consumer's
            in-flight slots. Default: ``batch``.
        lease: seconds a claimed item stays reserved for this process.
        poll_interval: seconds between claims when the last one found less than it asked for.
        wall: wall-clock time (epoch seconds), for claims and renewals.
        log: where failures are reported (the source's logger).
        failure: the message a failed claim is logged with.
        metrics: where lost leases and failed renewals are counted.
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
        capacity: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.claims = claims
        self.name = name
        self.batch = batch
        self.capacity = max(1, capacity or batch)
        self.lease = lease
        self.poll_interval = poll_interval
        self.wall = wall
        self.log = log
        self.failure = failure
        self.metrics = metrics or Metrics()
        self.token = uuid.uuid4().hex
        """The owner token of this holder's leases."""
        self.held: dict[Key, int] = {}
        """Items claimed and not yet settled (handed out or not): key -> ticket of the claim."""
        self.lost: set[tuple[Key, int]] = set()
        """Held items whose lease could not be renewed any more (no longer renewed)."""
        self.connected = True
        """False while claims fail (the store is down)."""
        self._tickets = itertools.count(1)
        self._freed = asyncio.Event()
        self._renewer: asyncio.Task[None] | None = None
        self._labels = (("source", name),)

    async def claimed(
        self, stopped: asyncio.Event, wakeup: asyncio.Event | None = None
    ) -> AsyncIterator[tuple[Item, int]]:
        """Claimed items with the ticket of their claim (for ``settle``), until ``stopped``.

        Claims no more than the free capacity; while none is free, waits for a settle.
        After a claim that found less than it asked for, waits ``poll_interval`` for
        ``wakeup`` (new items in this process) or ``stopped``. A claim that fails is
        logged and tried again after the wait; it never ends the iteration. Items
        claimed and not handed out when the iteration ends are released.
        """
        pending: list[tuple[Item, int]] = []
        try:
            while not stopped.is_set():
                if wakeup is not None:
                    wakeup.clear()
                free = min(self.batch, self.capacity - len(self.held))
                if free <= 0:
                    self._freed.clear()
                    await _wait(stopped, self._freed, self.poll_interval)
                    continue
                try:
                    items = await self.claims.claim(self.wall(), free, self.lease, self.token)
                    self.connected = True
                except Exception as exc:  # the store may be down; keep trying, report not ready
                    self.connected = False
                    self.log.error(self.failure, extra={"error": str(exc)})
                    items = []
                for item in items:
                    ticket = next(self._tickets)
                    self.held[self.claims.key(item)] = ticket  # supersedes an earlier claim
                    pending.append((item, ticket))
                self._renew_while_held()
                pending.reverse()
                while pending and not stopped.is_set():
                    yield pending.pop()
                if len(items) < free:
                    await _wait(stopped, wakeup, self.poll_interval)
        finally:
            if pending:
                await self._release_unsent(pending)

    async def settle(self, item: Item, ticket: int, outcome: Settlement) -> None:
        """Stop renewing ``item``'s lease, then finish it (ACK) or release it, if this claim
        still holds it; a lost lease is logged and counted, and nothing is settled."""
        key = self.claims.key(item)
        known = (key, ticket) in self.lost
        self.lost.discard((key, ticket))
        if self.held.get(key) != ticket:  # claimed again since, by this holder: superseded
            kept = False
        else:
            del self.held[key]
            self._freed.set()
            if outcome is Settlement.ACK:
                kept = await self.claims.finish(item, self.token)
            else:
                kept = bool(await self.claims.renew([key], 0.0, self.token))
        if not kept and self.claims.exclusive:
            if not known:
                self._count_lost(key)
            self.log.warning(
                "lease lost: the result is left to the new holder",
                extra={"source": self.name, "item": str(key), "outcome": outcome.name},
            )

    def stop(self) -> None:
        """The source stopped: end the renewals now if nothing is held (else they end when
        the last held item is settled: deliveries still running keep their leases)."""
        if not self.held and self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None

    def _renew_while_held(self) -> None:
        if self.held and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.create_task(self._renew(), name=f"{self.name}-leases")

    async def _renew(self) -> None:
        """Every third of a lease, extend every held lease by a lease; ends when none is held.

        A renewal that fails is logged, counted and tried again at the next tick: a lease
        that lapses means another process may take the item again (a duplicate, which the
        owner token keeps from being settled twice), never that it is lost.
        """
        while self.held:
            await asyncio.sleep(self.lease / 3)
            held = {k: t for k, t in self.held.items() if (k, t) not in self.lost}
            if not held:
                continue
            try:
                kept = set(
                    await self.claims.renew(list(held), self.wall() + self.lease, self.token)
                )
            except Exception as exc:  # the store may be down: next tick
                self.metrics.inc("bridge_lease_renewal_failures_total", self._labels)
                self.log.error(
                    "cannot renew leases",
                    extra={"source": self.name, "count": len(held), "error": str(exc)},
                )
                continue
            for key, ticket in held.items():
                if key not in kept and self.held.get(key) == ticket:
                    self.lost.add((key, ticket))
                    if self.claims.exclusive:
                        self._count_lost(key)

    def _count_lost(self, key: Key) -> None:
        self.metrics.inc("bridge_lease_lost_total", self._labels)
        self.log.warning(
            "lease lost to another holder", extra={"source": self.name, "item": str(key)}
        )

    async def _release_unsent(self, pending: list[tuple[Item, int]]) -> None:
        """Give back items claimed and never handed out, so they need not wait for the lease."""
        keys = []
        for item, ticket in pending:
            key = self.claims.key(item)
            if self.held.get(key) == ticket:
                del self.held[key]
                keys.append(key)
        if keys:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.claims.renew(keys, 0.0, self.token), self.lease / 3)


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
