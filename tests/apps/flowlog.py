"""A handler for flow-control tests across processes: one line per run in a shared log.

Line: ``<start> <end> <handler> <event id> <key> <pid> <slot>``, wall-clock seconds
(``slot``: when the limits let the run start, ``bridge.flow.controls.ADMITTED_AT``,
else its start), appended
with one ``write`` on an ``O_APPEND`` fd to ``BRIDGE_TEST_RECORD``. The run sleeps
``FLOW_WORK_SECONDS`` (default 0) between its start and its end.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from bridge import Context, Event
from bridge.flow.controls import ADMITTED_AT

_fd: list[int] = []


async def timed(event: Event[Any], ctx: Context) -> str:
    """Record the run's start and end times and its event's key."""
    started = time.time()
    work = float(os.environ.get("FLOW_WORK_SECONDS", "0"))
    if work:
        await asyncio.sleep(work)
    if not _fd:
        _fd.append(
            os.open(os.environ["BRIDGE_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        )
    key = event.data.get("key", "-") if isinstance(event.data, dict) else "-"
    slot = ADMITTED_AT.get()
    slot = started if slot is None else slot
    line = (
        f"{started:.6f} {time.time():.6f} {ctx.handler_id} {event.id} {key} {os.getpid()}"
        f" {slot:.6f}\n"
    )
    os.write(_fd[0], line.encode())
    return event.id
