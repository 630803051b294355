"""Live notices of run-history writes, for the developer UI's server-sent events.

The history recorder publishes, after each batch it wrote, the ids of the events
it wrote and of their parents; every subscriber (one per open UI page) gets them.
A notice says only "these changed": the page reads what it shows from the store,
so a notice that is lost costs a stale view, never a wrong one. Each subscriber
holds a bounded queue: a subscriber that does not keep up gets one
"everything changed" notice (``all=True``) instead of an ever longer queue, so a
slow page never holds memory or the recorder. A batch of more than ``MAX_IDS``
ids is announced as ``all`` too, so a message stays small on a busy bridge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["MAX_IDS", "HistoryFeed", "Notice"]

MAX_IDS = 500  # a batch that wrote more events is announced as "anything may have changed"


@dataclass(frozen=True, slots=True)
class Notice:
    """What one write changed: event ids and their parents' ids (``all``: anything may have)."""

    events: tuple[str, ...] = ()
    parents: tuple[str, ...] = ()
    all: bool = False


@dataclass(eq=False, slots=True)
class _Subscriber:
    queue: asyncio.Queue[Notice | None] = field(default_factory=lambda: asyncio.Queue(32))


class HistoryFeed:
    """Fans notices out to subscribers; ``close`` ends every subscription.

    Args:
        max_subscribers: beyond this many open subscriptions ``subscribe`` refuses.
    """

    def __init__(self, max_subscribers: int = 64) -> None:
        self.max_subscribers = max_subscribers
        self._subscribers: set[_Subscriber] = set()
        self.closed = False

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    def subscribe(self) -> asyncio.Queue[Notice | None] | None:
        """A queue of notices, ended by ``None`` when the feed closes; None when full or closed."""
        if self.closed or len(self._subscribers) >= self.max_subscribers:
            return None
        sub = _Subscriber()
        self._subscribers.add(sub)
        return sub.queue

    def unsubscribe(self, queue: asyncio.Queue[Notice | None]) -> None:
        """Forget a subscription (idempotent)."""
        self._subscribers = {s for s in self._subscribers if s.queue is not queue}

    def publish(self, events: Iterable[str], parents: Iterable[str] = ()) -> None:
        """Tell every subscriber that these events (children of ``parents``) changed."""
        if not self._subscribers:
            return
        notice = Notice(tuple(events), tuple(p for p in parents if p))
        if not notice.events:
            return
        if len(notice.events) + len(notice.parents) > MAX_IDS:  # keep each message small
            notice = Notice(all=True)
        for sub in self._subscribers:
            queue = sub.queue
            if queue.full():
                # Behind: replace what waits by one notice that says "reload everything".
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(Notice(all=True))
            else:
                queue.put_nowait(notice)

    def close(self) -> None:
        """End every subscription (each queue gets ``None``); later subscribes are refused."""
        self.closed = True
        for sub in self._subscribers:
            queue = sub.queue
            while queue.full():
                queue.get_nowait()
            queue.put_nowait(None)
        self._subscribers = set()
