"""Per-attempt timeouts without a loop timer per attempt.

``asyncio.timeout`` arms a loop timer for every attempt; at thousands of
attempts per second that is the largest cost of a run. Here attempts with the
same timeout value share one FIFO queue (their deadlines come in order), and a
single timer fires at the earliest pending deadline, cancels the attempts whose
deadline passed, and re-arms for the next. Arming never touches the timer
unless the new deadline is earlier than the one it is set for. The attempt turns
the cancellation into ``TimeoutError``, as ``asyncio.timeout`` does.

A deadline can be shifted (``Deadline.shift``) while its attempt waits for something
that is not its own work (a sync handler waiting for the thread of the attempt
before it); a shifted deadline leaves its FIFO queue for a heap.
A timeout cancels the attempt's task: it stops waiting. It cannot stop a thread that
a sync handler runs in; see ``handlers.python``.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import math
from collections import deque
from typing import Any

_CURRENT: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "bridge_deadline", default=None
)


def current_deadline() -> Deadline | None:
    """The deadline of the attempt running in this task, if one is armed."""
    deadline = _CURRENT.get()
    return None if deadline is None or deadline.done else deadline


class Deadline:
    """One armed attempt. The attempt calls ``finish()`` when it ends; ``fired`` is set by the watchdog."""

    __slots__ = ("_token", "_watchdog", "at", "done", "fired", "task")

    def __init__(self, at: float, task: asyncio.Task[Any], watchdog: Watchdog) -> None:
        self.at = at
        self.task: asyncio.Task[Any] | None = task
        self.done = False
        self.fired = False
        self._watchdog = watchdog
        self._token: contextvars.Token[Deadline | None] | None = None

    def finish(self) -> None:
        self.done = True
        self.task = None  # do not keep the task alive while the entry waits in its queue
        token, self._token = self._token, None
        if token is not None:
            try:  # noqa: SIM105 (not contextlib.suppress: a context manager per attempt)
                _CURRENT.reset(token)
            except ValueError:  # finished from another context
                pass

    def shift(self, seconds: float) -> None:
        """Move the deadline ``seconds`` later (earlier when negative); no-op once it
        fired or the attempt finished."""
        if not (self.done or self.fired):
            self._watchdog.move(self, self.at + seconds)


class Watchdog:
    """Cancels attempts that outlive their deadline. ``close()`` disarms it."""

    def __init__(self) -> None:
        # Per timeout value, (deadline, entry) in deadline order; a shifted entry's
        # deadline no longer matches the one it was queued with.
        self._queues: dict[float, deque[tuple[float, Deadline]]] = {}
        self._moved: list[tuple[float, int, Deadline]] = []  # shifted deadlines, a heap
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = math.inf

    def now(self) -> float:
        """The loop's time, the clock deadlines are on (``arm``'s ``since``)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def arm(self, timeout: float, since: float | None = None) -> Deadline:
        """Arm a deadline ``timeout`` seconds from now (or from ``since``, a ``now()`` of
        before) for the current task."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Watchdog.arm() must be called from a task")
        entry = Deadline((loop.time() if since is None else since) + timeout, task, self)
        entry._token = _CURRENT.set(entry)
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        while queue and queue[0][1].done:  # finished attempts leave from the front as we go
            queue.popleft()
        queue.append((entry.at, entry))
        if entry.at < self._wake_at:
            self._schedule(loop, entry.at)
        return entry

    def move(self, entry: Deadline, at: float) -> None:
        """Give ``entry`` the deadline ``at``; its place in its FIFO queue is skipped."""
        entry.at = at
        heapq.heappush(self._moved, (at, next(self._order), entry))
        if at < self._wake_at and self._loop is not None:
            self._schedule(self._loop, at)

    def _schedule(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._wake_at = at
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._wake_at = math.inf
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        earliest = math.inf
        for queue in self._queues.values():
            while queue:
                at, head = queue[0]
                if head.done or head.fired or head.at != at:
                    queue.popleft()  # finished, or shifted: the heap holds it now
                elif at <= now:
                    queue.popleft()
                    self._expire(head)
                else:
                    earliest = min(earliest, at)
                    break
        moved = self._moved
        while moved:
            at, _, entry = moved[0]
            if entry.done or entry.fired or entry.at != at:
                heapq.heappop(moved)  # finished, or shifted again since
            elif at <= now:
                heapq.heappop(moved)
                self._expire(entry)
            else:
                earliest = min(earliest, at)
                break
        if earliest < math.inf:
            self._schedule(loop, earliest)

    @staticmethod
    def _expire(entry: Deadline) -> None:
        entry.fired = True
        if entry.task is not None:
            entry.task.cancel()

    def close(self) -> None:
        """Disarm: no attempt is cancelled after this."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_at = math.inf
        self._queues.clear()
        self._moved.clear()
