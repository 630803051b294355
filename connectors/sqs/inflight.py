"""The SQS source's book of received, unsettled messages (no I/O).

It bounds how many messages are held (``max_in_flight`` slots, reserved before a
receive), keeps one entry per MessageId (a message received again while held
adopts the newest receipt handle instead of becoming a second delivery), and,
for ordered FIFO queues, chains the messages of a ``MessageGroupId`` so only the
head of each group is ready; the next one becomes ready when the head settles.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from bridge.transport import Delivery, Settlement


@dataclass(eq=False, slots=True)
class Held:
    """A received message that is not settled yet."""

    message_id: str
    receipt: str  # the newest receipt handle: settle and the heartbeat use it
    group: str | None
    expires: float  # loop time when the visibility last set runs out
    delivery: Delivery | None = None
    done: bool = False


class InFlight:
    """Held messages of one source.

    Args:
        capacity: most messages held at once (received, not settled).
        ordered: chain the messages of each FIFO group.
    """

    def __init__(self, capacity: int, ordered: bool) -> None:
        self.ordered = ordered
        self.held: dict[str, Held] = {}
        self.ready: asyncio.Queue[Held] = asyncio.Queue()
        self._groups: dict[str, deque[Held]] = {}
        self._slots = asyncio.Semaphore(capacity)

    async def reserve(self, most: int) -> int:
        """Take 1 to ``most`` slots for a receive, waiting for the first one."""
        await self._slots.acquire()
        taken = 1
        while taken < most and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def release(self, count: int) -> None:
        """Give back reserved slots that no message filled."""
        for _ in range(count):
            self._slots.release()

    def admit(
        self,
        message_id: str,
        receipt: str,
        group: str | None,
        expires: float,
        delivery: Callable[[Held], Delivery],
    ) -> None:
        """Book a received message (it fills one reserved slot); make it ready if it may run."""
        held = self.held.get(message_id)
        if held is not None:
            # Received again while held here (its visibility lapsed): keep one delivery,
            # settled with the newest receipt handle.
            held.receipt = receipt
            held.expires = expires
            self.release(1)
            return
        held = Held(message_id, receipt, group, expires)
        held.delivery = delivery(held)
        self.held[message_id] = held
        if self.ordered and group is not None:
            waiting = self._groups.get(group)
            if waiting is not None:
                waiting.append(held)  # its group is busy: it runs after the ones before it
                return
            self._groups[group] = deque()
        self.ready.put_nowait(held)

    def finish(self, held: Held, outcome: Settlement) -> list[Held]:
        """Forget a settled message and start the next of its group.

        Returns the messages of its group held behind it when ``outcome`` is
        ``RETRY_LATER``: they go back too (the caller makes them visible), to keep
        their order.
        """
        held.done = True
        self._forget(held)
        if not self.ordered or held.group is None:
            return []
        waiting = self._groups.get(held.group)
        if waiting is None:
            return []
        if outcome is Settlement.RETRY_LATER or not waiting:
            del self._groups[held.group]
            for other in waiting:
                other.done = True
                self._forget(other)
            return list(waiting)
        self.ready.put_nowait(waiting.popleft())
        return []

    def take_undelivered(self) -> list[Held]:
        """Forget and return every message not handed out yet (ready or waiting)."""
        out: list[Held] = []
        while not self.ready.empty():
            out.append(self.ready.get_nowait())
        for waiting in self._groups.values():
            out.extend(waiting)
        self._groups.clear()
        for held in out:
            held.done = True
            self._forget(held)
        return out

    def expiring(self, before: float) -> list[Held]:
        """Held messages whose visibility runs out before ``before``."""
        return [h for h in self.held.values() if h.expires < before]

    async def next(self, closed: asyncio.Future[Any]) -> Held | None:
        """The next ready message, or None when ``closed`` completed first."""
        getter = asyncio.ensure_future(self.ready.get())
        try:
            await asyncio.wait((getter, closed), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            if getter.done() and not getter.cancelled():
                self.ready.put_nowait(getter.result())  # not handed out: keep it
            getter.cancel()
            raise
        if getter.done():
            return getter.result()
        getter.cancel()
        return None

    async def handed_out(
        self, closed: asyncio.Event, failure: Callable[[], Exception | None]
    ) -> AsyncGenerator[Delivery, None]:
        """Yield each admitted delivery that is still wanted, until ``closed`` is set.

        Raises:
            Exception: what ``failure()`` returns, once it returns one (a background
                task of the source failed for good).
        """
        ended = asyncio.ensure_future(closed.wait())
        try:
            while True:
                if (error := failure()) is not None:
                    raise error
                if self.ready.empty():
                    if closed.is_set():
                        return
                    held = await self.next(ended)
                    if held is None:
                        continue
                else:
                    held = self.ready.get_nowait()
                if held.done or held.delivery is None:
                    continue
                yield held.delivery
        finally:
            ended.cancel()

    def _forget(self, held: Held) -> None:
        if self.held.get(held.message_id) is held:
            del self.held[held.message_id]
            self._slots.release()
