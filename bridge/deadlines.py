"""Per-attempt timeouts without a loop timer per attempt.

``asyncio.timeout`` arms a loop timer for every attempt; at thousands of
attempts per second that is the largest cost of a run. Here attempts with the
same timeout value share one FIFO queue (their deadlines come in order), and a
single timer fires at the earliest pending deadline, cancels the attempts whose
deadline passed, and re-arms for the next. Arming never touches the timer
unless the new deadline is earlier than the one it is set for. The attempt turns
the cancellation into ``TimeoutError``, as ``asyncio.timeout`` does.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any


class Deadline:
    """One armed attempt. The attempt calls ``finish()`` when it ends; ``fired`` is set by the watchdog."""

    __slots__ = ("at", "done", "fired", "task")

    def __init__(self, at: float, task: asyncio.Task[Any]) -> None:
        self.at = at
        self.task: asyncio.Task[Any] | None = task
        self.done = False
        self.fired = False

    def finish(self) -> None:
        self.done = True
        self.task = None  # do not keep the task alive while the entry waits in its queue


class Watchdog:
    """Cancels attempts that outlive their deadline. ``close()`` disarms it."""

    def __init__(self) -> None:
        self._queues: dict[float, deque[Deadline]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at = math.inf

    def arm(self, timeout: float) -> Deadline:
        """Arm a deadline ``timeout`` seconds from now for the current task."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("Watchdog.arm() must be called from a task")
        entry = Deadline(loop.time() + timeout, task)
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        while queue and queue[0].done:  # finished attempts leave from the front as we go
            queue.popleft()
        queue.append(entry)
        if entry.at < self._wake_at:
            self._schedule(loop, entry.at)
        return entry

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
                head = queue[0]
                if head.done:
                    queue.popleft()
                elif head.at <= now:
                    queue.popleft()
                    head.fired = True
                    if head.task is not None:
                        head.task.cancel()
                else:
                    earliest = min(earliest, head.at)
                    break
        if earliest < math.inf:
            self._schedule(loop, earliest)

    def close(self) -> None:
        """Disarm: no attempt is cancelled after this."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_at = math.inf
        self._queues.clear()
