"""Handlers for the orchestration tests: parked retries, durable steps, fan-out and joins.

Every handler appends one line per execution to ``BRIDGE_TEST_RECORD`` (one ``write``
on an ``O_APPEND`` fd, so several processes can share the file):

    <generation> <pid> <handler id> <event id> <attempt> <what> <wall clock>

``what`` says what happened (``ok``, ``park``, ``fail``, ``fatal``, ``step:<id>``,
``done:<join id>:<status>`` ...); the wall clock is ``time.time()`` when the line was
written, used only to order an execution against a due time the store kept. The
generation is ``BRIDGE_TEST_GENERATION`` (bumped by ``BridgeProcess`` on each start).

Knobs (environment):
    ORCH_RETRY_AFTER     ``park_once``'s first attempt asks for a retry this many seconds
                         later (default 3; an event's ``data.retry_after`` wins)
    ORCH_CHILDREN        how many children ``chaos_order`` emits (default 3)
    ORCH_FAIL_RATE       ``chaos_*``: fraction of attempts that fail transiently (default 0.3)
    ORCH_PARK_SHARE      of those, the fraction that ask for a parked retry (default 0.5)
    ORCH_FATAL_RATE      ``chaos_*``: fraction of branches that fail permanently (default 0.1)
    ORCH_WORK_SECONDS    ``chaos_*``: how long a durable step works after its side effect
                         (default 0)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass
from typing import Any

from bridge import Context, Event, Fatal
from bridge.errors import RetryAfter

_fd: int | None = None


def _write(ctx: Context, event_id: str, what: str) -> None:
    global _fd
    if _fd is None:
        _fd = os.open(
            os.environ["BRIDGE_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
        )
    generation = os.environ.get("BRIDGE_TEST_GENERATION", "0")
    line = (
        f"{generation} {os.getpid()} {ctx.handler_id} {event_id} {ctx.attempt} {what}"
        f" {time.time():.6f}\n"
    )
    os.write(_fd, line.encode())


@dataclass(frozen=True, slots=True)
class Line:
    """One recorded execution."""

    generation: int
    pid: int
    handler: str
    event_id: str
    attempt: int
    what: str
    at: float


def parse(lines: list[str]) -> list[Line]:
    """The lines of a record file (complete lines only, as ``tests.support.read_lines`` gives)."""
    out = []
    for text in lines:
        gen, pid, handler, event_id, attempt, what, at = text.split(" ")
        out.append(Line(int(gen), int(pid), handler, event_id, int(attempt), what, float(at)))
    return out


# ---------------------------------------------------------------- parked retries


def _retry_after(event: Event[Any]) -> float:
    data = event.data if isinstance(event.data, dict) else {}
    return float(data.get("retry_after") or os.environ.get("ORCH_RETRY_AFTER", "3"))


async def park_once(event: Event[Any], ctx: Context) -> dict[str, int]:
    """The first attempt asks for a retry ``ORCH_RETRY_AFTER`` seconds later; later ones succeed."""
    if ctx.attempt == 1:
        _write(ctx, event.id, "park")
        raise RetryAfter("not yet", _retry_after(event))
    _write(ctx, event.id, "ok")
    return {"attempt": ctx.attempt}


async def record(event: Event[Any], ctx: Context) -> dict[str, str]:
    """Succeed, recording the execution; a join outcome is recorded with its join id and status."""
    data = event.data if isinstance(event.data, dict) else {}
    if "join_id" in data:
        _write(ctx, event.id, f"done:{data['join_id']}:{data.get('status')}")
    else:
        _write(ctx, event.id, "ok")
    return {"ok": event.id}


# ---------------------------------------------------------------- chaos


def draw(*parts: str) -> float:
    """A number in [0, 1) that is a pure function of ``parts``."""
    digest = hashlib.sha256("\x00".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def fate(handler: str, event_id: str, attempt: int) -> str:
    """One attempt's outcome: ``fatal``, ``park`` (a long retry), ``fail`` (a short one) or ``ok``.

    A pure function of (handler, event id, attempt) and the rates in the environment, so a
    test computes what must succeed and what must be dead-lettered.
    """
    fatal_rate = float(os.environ.get("ORCH_FATAL_RATE", "0.1"))
    fail_rate = float(os.environ.get("ORCH_FAIL_RATE", "0.3"))
    park_share = float(os.environ.get("ORCH_PARK_SHARE", "0.5"))
    if draw(handler, event_id, "fatal") < fatal_rate:
        return "fatal"
    if draw(handler, event_id, str(attempt)) < fail_rate:
        return "park" if draw(handler, event_id, str(attempt), "park") < park_share else "fail"
    return "ok"


def expected_outcome(handler: str, event_id: str, attempts: int) -> tuple[str, int]:
    """(``succeeded`` | ``dead_lettered``, the attempt that decided it) by ``fate``."""
    for attempt in range(1, attempts + 1):
        outcome = fate(handler, event_id, attempt)
        if outcome == "ok":
            return "succeeded", attempt
        if outcome == "fatal":
            return "dead_lettered", attempt
    return "dead_lettered", attempts


async def _work() -> None:
    await asyncio.sleep(float(os.environ.get("ORCH_WORK_SECONDS", "0")))


def _fail(ctx: Context, event_id: str) -> None:
    outcome = fate(ctx.handler_id, event_id, ctx.attempt)
    if outcome == "ok":
        return
    _write(ctx, event_id, outcome)
    if outcome == "fatal":
        raise Fatal("permanent failure (by hash)")
    if outcome == "park":
        raise RetryAfter("long transient failure (by hash)", 2.0)
    raise RuntimeError(f"short transient failure (by hash, attempt {ctx.attempt})")


async def chaos_order(event: Event[Any], ctx: Context) -> dict[str, Any]:
    """An order: reserve stock in a durable step, then emit one child per item and a batch
    event (the join's start); ``ORCH_CHILDREN`` items, ids by ``child_event_id`` seq 1..n, the
    batch seq n + 1."""

    async def reserve() -> str:
        _write(ctx, event.id, "step:reserve")
        await _work()  # the side effect is done, its result not yet kept: a kill window
        return f"reservation-{event.id}"

    reservation = await ctx.step("reserve", reserve)
    _fail(ctx, event.id)
    children = int(os.environ.get("ORCH_CHILDREN", "3"))
    order = event.data["order"]
    for index in range(children):
        ctx.emit("chaos/item", {"order": order, "index": index})
    # The join that waits for the items opens on this, emitted with them (and so only
    # for an order that succeeded): its members may well be handled before it.
    ctx.emit("chaos/batch", {"order": order, "count": children})
    _write(ctx, event.id, "ok")
    return {"reservation": reservation}


async def chaos_item(event: Event[Any], ctx: Context) -> dict[str, Any]:
    """An item: charge in a durable step (a side effect per execution), then maybe fail."""

    async def charge() -> str:
        _write(ctx, event.id, "step:charge")
        await _work()
        return f"charge-{event.id}"

    charged = await ctx.step("charge", charge)
    _fail(ctx, event.id)
    _write(ctx, event.id, "ok")
    return {"charge": charged}


async def park_then_hang(event: Event[Any], ctx: Context) -> dict[str, int]:
    """Like ``park_once``, but the first process to run the retry hangs in it (to be killed)."""
    if ctx.attempt == 1:
        _write(ctx, event.id, "park")
        raise RetryAfter("not yet", _retry_after(event))
    if os.environ.get("BRIDGE_TEST_GENERATION", "0") == "1":
        _write(ctx, event.id, "hang")
        await asyncio.sleep(3600)
    _write(ctx, event.id, "ok")
    return {"attempt": ctx.attempt}


async def slow(event: Event[Any], ctx: Context) -> dict[str, str]:
    """Take a while (``data.sleep`` seconds, default 1), then record the execution."""
    data = event.data if isinstance(event.data, dict) else {}
    await asyncio.sleep(float(data.get("sleep", 1.0)))
    _write(ctx, event.id, "ok")
    return {"ok": event.id}
