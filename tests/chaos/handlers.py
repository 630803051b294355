"""Handlers the chaos scenarios run inside ``bridge run``.

They write the same line as ``tests.apps.recorder`` (``<generation> <handler> <event id>
<attempt> <seq>``, one ``write`` on an ``O_APPEND`` fd of ``BRIDGE_TEST_RECORD``), once
the work is done, so ``tests.support.executions`` reads them.

Knobs (environment):
    BRIDGE_CHAOS_MAX_SLEEP     ``sleepy`` sleeps 0..this many seconds (default 2.0), by seq
    BRIDGE_CHAOS_SLOW_SECONDS  ``sometimes_slow`` sleeps this long for 1 seq in 20 (default 7)
"""

from __future__ import annotations

import asyncio
import os
import zlib
from typing import Any

from bridge import Context, Event

_fd: int | None = None


def _write(event: Event[Any], ctx: Context) -> None:
    global _fd
    if _fd is None:
        _fd = os.open(
            os.environ["BRIDGE_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
    generation = os.environ.get("BRIDGE_TEST_GENERATION", "0")
    line = f"{generation} {ctx.handler_id} {event.id} {ctx.attempt} {seq_of(event)}\n"
    os.write(_fd, line.encode())


def seq_of(event: Event[Any]) -> str:
    data = event.data
    return str(data["seq"]) if isinstance(data, dict) and "seq" in data else "-"


def is_slow(seq: str) -> bool:
    """1 message in 20 (5%): ``sometimes_slow`` takes its long sleep for these."""
    return seq.isdigit() and int(seq) % 20 == 0


def sleep_for(seq: str, most: float) -> float:
    """A duration spread evenly over 0..``most``, fixed per seq (so a rerun takes as long)."""
    return (zlib.crc32(seq.encode()) % 1001) / 1000 * most


async def sleepy(event: Event[Any], ctx: Context) -> None:
    """Take 0..``BRIDGE_CHAOS_MAX_SLEEP`` seconds, then record."""
    most = float(os.environ.get("BRIDGE_CHAOS_MAX_SLEEP", "2.0"))
    await asyncio.sleep(sleep_for(seq_of(event), most))
    _write(event, ctx)


async def sometimes_slow(event: Event[Any], ctx: Context) -> None:
    """Record at once, except 1 message in 20 which first sleeps ``BRIDGE_CHAOS_SLOW_SECONDS``."""
    if is_slow(seq_of(event)):
        await asyncio.sleep(float(os.environ.get("BRIDGE_CHAOS_SLOW_SECONDS", "7")))
    _write(event, ctx)
