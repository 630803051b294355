"""Group commit for webhook requests: the events of requests that arrive together are
handed to the inbox in one ``accept`` call.

Each ``accept`` is a transaction of the store (on SQLite, one on the event loop's own
write connection while the database is free). Requests whose handlers run in the same
loop iteration (a burst from a provider, many connections at once) share one
transaction instead of one each. The answer of each request still waits for the commit
of its own events; a failure fails every request of the group (each is answered 503
and retried by its sender).

No task is spawned: the first request of a group (the leader) yields once so the
others can join, writes the group, and hands each member its part of the result.
If the leader is cancelled, the members get the cancellation as an error.

One group is written at a time: while one write is under way, the requests that
arrive join the next group, which is written as soon as that write ends. Under load a
group then holds what arrived during a whole write, not during one loop iteration:
fewer transactions, each with its commit's fixed cost. Alone, a request waits for no
other write; behind a write that takes longer than ``bridge.store.batching.PATIENCE``
(a slow or hung store), a group goes beside it, so each request still gets its answer
(503) within the store's deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bridge.store.batching import PATIENCE, Turns

Accept = Callable[[Sequence[Any]], Awaitable[list[bool]]]


class _Group:
    __slots__ = ("events", "members")

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.members: list[tuple[int, int, asyncio.Future[list[bool]]]] = []


class GroupCommit:
    """Coalesces concurrent ``accept`` calls into one.

    Args:
        accept: the inbox's ``accept`` (durably stores events, returns "new" flags).
        max_events: a group holds at most this many events; more start a new group.
    """

    def __init__(self, accept: Accept, max_events: int = 512, patience: float = PATIENCE) -> None:
        self._accept = accept
        self._max = max_events
        self._open: _Group | None = None
        self._turns = Turns(patience)  # one group's write at a time

    async def accept(self, events: Sequence[Any]) -> list[bool]:
        """Store ``events`` with those of the concurrent requests; their "new" flags.

        Raises:
            Exception: whatever ``accept`` raised for the group (nothing was stored).
        """
        group = self._open
        if group is not None and len(group.events) + len(events) <= self._max:
            start = len(group.events)
            group.events.extend(events)
            future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
            group.members.append((start, len(group.events), future))
            return await future
        group = self._open = _Group()
        group.events.extend(events)
        try:
            try:
                await asyncio.sleep(0)  # one loop iteration: requests already under way join
                if self._turns.busy:  # another group is written: this one stays open, grows
                    await self._turns.wait()
            finally:
                if self._open is group:
                    self._open = None
            written = self._turns.begin()
            try:
                fresh = await self._accept(group.events)
            finally:
                self._turns.end(written)
        except BaseException as exc:
            for _, _, member in group.members:
                if not member.done():
                    member.set_exception(
                        exc if isinstance(exc, Exception) else RuntimeError("commit cancelled")
                    )
            raise
        for start, end, member in group.members:
            if not member.done():
                member.set_result(fresh[start:end])
        return fresh[: len(events)]
