"""Handlers for end-to-end tests: they record every execution to a file, one line each.

Line format: ``<generation> <handler id> <event id> <attempt> <extra>``, where the
generation is ``BRIDGE_TEST_GENERATION`` (bumped by ``BridgeProcess`` on each start),
so a test can tell which process run executed what. The file is
``BRIDGE_TEST_RECORD``; lines are appended with one ``write`` on an ``O_APPEND`` fd.

Behaviour knobs (environment):
    BRIDGE_TEST_SLOW_SECONDS   ``slow`` sleeps this long (default 1.0)
    BRIDGE_TEST_FAIL_RATE      ``flaky`` and ``hashed`` fail this fraction of attempts (default 0.2)
    BRIDGE_TEST_FATAL_RATE     ``hashed`` fails this fraction of events permanently (default 0.01)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from typing import Any

from bridge import Context, Event, Fatal

_fd: int | None = None


def _write(line: str) -> None:
    global _fd
    if _fd is None:
        _fd = os.open(
            os.environ["BRIDGE_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
    os.write(_fd, line.encode())


def _line(event: Event[Any], ctx: Context, extra: str = "-") -> str:
    generation = os.environ.get("BRIDGE_TEST_GENERATION", "0")
    return f"{generation} {ctx.handler_id} {event.id} {ctx.attempt} {extra}\n"


def _key(event: Event[Any]) -> str:
    data = event.data
    if isinstance(data, dict):
        for name in ("key", "seq", "n"):
            if name in data:
                return str(data[name])
    return "-"


async def record(event: Event[Any], ctx: Context) -> dict[str, str]:
    """Succeed at once, recording the execution."""
    _write(_line(event, ctx, _key(event)))
    return {"ok": event.id}


async def slow(event: Event[Any], ctx: Context) -> None:
    """Sleep, then record."""
    await asyncio.sleep(float(os.environ.get("BRIDGE_TEST_SLOW_SECONDS", "1.0")))
    _write(_line(event, ctx, _key(event)))


async def fail(event: Event[Any], ctx: Context) -> None:
    """Record the attempt, then fail (retriable)."""
    _write(_line(event, ctx, "fail"))
    raise RuntimeError(f"always fails (attempt {ctx.attempt})")


async def poison(event: Event[Any], ctx: Context) -> None:
    """Fail for events whose data has ``poison: true``; record the others."""
    data = event.data if isinstance(event.data, dict) else {}
    if data.get("poison"):
        _write(_line(event, ctx, "poison"))
        raise RuntimeError("poison message")
    _write(_line(event, ctx, _key(event)))


async def flaky(event: Event[Any], ctx: Context) -> None:
    """Fail a random fraction of attempts (retriable), recording only successes."""
    if random.random() < float(os.environ.get("BRIDGE_TEST_FAIL_RATE", "0.2")):
        raise RuntimeError("transient failure")
    _write(_line(event, ctx, _key(event)))


async def fatal(event: Event[Any], ctx: Context) -> None:
    """Fail permanently."""
    raise Fatal("permanent failure")


async def gated(event: Event[Any], ctx: Context) -> None:
    """Fail while the file ``BRIDGE_TEST_GATE`` exists; record once it is gone."""
    if os.path.exists(os.environ["BRIDGE_TEST_GATE"]):
        raise RuntimeError("the gate is closed")
    _write(_line(event, ctx, _key(event)))


def fate(event_id: str, attempt: int, fail_rate: float, fatal_rate: float) -> str:
    """``hashed``'s outcome of one attempt: "fatal", "fail" or "ok", a pure function of its inputs.

    An event is fatal on every attempt with probability ``fatal_rate``; otherwise each
    attempt fails with probability ``fail_rate``, drawn from a hash of (event id, attempt),
    so a test can compute what must succeed and what must be dead-lettered.
    """
    if _draw(event_id, "fatal") < fatal_rate:
        return "fatal"
    return "fail" if _draw(event_id, str(attempt)) < fail_rate else "ok"


def _draw(*parts: str) -> float:
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


async def hashed(event: Event[Any], ctx: Context) -> None:
    """Fail deterministically by ``fate``, recording every attempt (extra: fail, fatal or the key)."""
    outcome = fate(
        event.id,
        ctx.attempt,
        float(os.environ.get("BRIDGE_TEST_FAIL_RATE", "0.2")),
        float(os.environ.get("BRIDGE_TEST_FATAL_RATE", "0.01")),
    )
    if outcome == "fatal":
        _write(_line(event, ctx, "fatal"))
        raise Fatal("permanent failure (by hash)")
    if outcome == "fail":
        _write(_line(event, ctx, "fail"))
        raise RuntimeError(f"transient failure (by hash, attempt {ctx.attempt})")
    _write(_line(event, ctx, _key(event)))
