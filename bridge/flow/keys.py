"""Concurrency per key: at most ``limit`` holders of one key at once, FIFO per key."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class _KeySlot:
    __slots__ = ("holders", "waiters")

    def __init__(self) -> None:
        self.holders = 0
        self.waiters: deque[asyncio.Future[None]] = deque()


class KeyedLimiter:
    """At most ``limit`` holders per key at once, FIFO per key.

    A key's state exists only while it is held or awaited, so the map never
    grows past the keys in use. A released place passes straight to the next
    waiter of that key; a waiter cancelled after it was handed a place passes
    it on in turn.
    """

    def __init__(self, limit: int = 1) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._slots: dict[Hashable, _KeySlot] = {}

    def __len__(self) -> int:
        """Keys currently held or awaited."""
        return len(self._slots)

    def holders(self, key: Hashable) -> int:
        """How many hold a place under ``key`` now."""
        slot = self._slots.get(key)
        return slot.holders if slot is not None else 0

    async def acquire(self, key: Hashable) -> None:
        """Wait for a place under ``key``; pair with ``release(key)``."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _KeySlot()
        if slot.holders < self.limit and not slot.waiters:
            slot.holders += 1
            return
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slot.waiters.append(me)
        try:
            await me
        except asyncio.CancelledError:
            if me.done() and not me.cancelled():
                self.release(key)  # handed a place just as we were cancelled
            else:
                # A release may already have skipped (and dropped) our cancelled future.
                if me in slot.waiters:
                    slot.waiters.remove(me)
                if not slot.holders and not slot.waiters and self._slots.get(key) is slot:
                    del self._slots[key]
            raise

    def release(self, key: Hashable) -> None:
        """Give back a place under ``key``: to its next waiter, else free it.

        Raises:
            RuntimeError: ``key`` is not held.
        """
        slot = self._slots.get(key)
        if slot is None or slot.holders == 0:
            raise RuntimeError(f"release of a key that is not held: {key!r}")
        while slot.waiters:
            nxt = slot.waiters.popleft()
            if not nxt.done():
                nxt.set_result(None)  # the place passes on; holders unchanged
                return
        slot.holders -= 1
        if slot.holders == 0:
            del self._slots[key]

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """``async with limiter.hold(key):`` holds a place for the block."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release(key)
