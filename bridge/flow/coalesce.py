"""Coalesced store calls: concurrent requests for one group become one call.

The first caller of a group leads: it takes every request queued for the group,
makes one call for all of them, hands each its answer, and repeats while more
arrived meanwhile. The others wait on a future. A leader cancelled mid-way hands
the lead to the next request, so nobody waits for a call that nobody makes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Req = TypeVar("Req")
Ans = TypeVar("Ans")
_LEAD = object()


class Coalescer(Generic[Req, Ans]):
    """One ``call(group, requests)`` for the requests of a group that arrive together.

    Args:
        call: answers a batch of requests of one group, one answer per request, in order.
    """

    def __init__(self, call: Callable[[Hashable, Sequence[Req]], Awaitable[Sequence[Ans]]]) -> None:
        self._call = call
        self._queued: dict[Hashable, list[tuple[Req, asyncio.Future[object]]]] = {}
        self._leading: set[Hashable] = set()
        self.calls = 0

    async def ask(self, group: Hashable, request: Req) -> Ans:
        """The answer to ``request``, from a call shared with the group's other requests.

        Raises:
            Exception: whatever the call raised, to every request of its batch.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        self._queued.setdefault(group, []).append((request, future))
        while group in self._leading:
            try:
                answer = await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled() and future.result() is _LEAD:
                    self._leading.discard(group)  # handed the lead as we were cancelled
                    self._pass_lead(group)
                raise
            if answer is not _LEAD:
                return answer  # type: ignore[return-value]
            future = loop.create_future()  # we lead now: queue ourselves again, first
            self._queued.setdefault(group, []).insert(0, (request, future))
            break
        self._leading.add(group)
        try:
            while not future.done() and (queue := self._queued.pop(group, None)):
                live = [(r, f) for r, f in queue if not f.done()]
                if not live:
                    continue
                self.calls += 1
                try:
                    answers = await self._call(group, [r for r, _ in live])
                except Exception as exc:
                    for _, f in live:
                        if not f.done():
                            f.set_exception(exc)
                    raise
                except BaseException:  # cancelled: the others ask again under a new lead
                    others = [(r, f) for r, f in live if f is not future]
                    self._queued[group] = others + self._queued.get(group, [])
                    raise
                for (_, f), answer in zip(live, answers, strict=True):
                    if not f.done():
                        f.set_result(answer)
        finally:
            self._leading.discard(group)
            self._pass_lead(group)
        return future.result()  # type: ignore[return-value]

    def _pass_lead(self, group: Hashable) -> None:
        queue = self._queued.get(group, [])
        while queue:
            _, f = queue.pop(0)
            if not f.done():
                self._leading.add(group)
                f.set_result(_LEAD)
                return
        self._queued.pop(group, None)
