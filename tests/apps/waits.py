"""Handlers for the durable sleep and wait tests: each writes a line per step and per
wake-up to ``BRIDGE_TEST_RECORD`` (the format of ``tests.apps.orchestration``).

``what`` is ``step:before`` / ``step:after`` (inside ``ctx.step``: written once per
committed step unless the process dies between the write and the commit),
``woke`` (after the sleep or wait returned: once per resumed execution) and, for
the waiter, ``paid:<event id or none>``.

Knobs (environment): ``WAITS_SLEEP`` seconds the sleeper sleeps (default 3),
``WAITS_TIMEOUT`` seconds the waiter waits (default 60).
"""

from __future__ import annotations

import os
from typing import Any

from bridge import Context, Event
from tests.apps.orchestration import _write


def _effect(ctx: Context, event_id: str, what: str) -> str:
    _write(ctx, event_id, what)
    return what


async def sleeper(event: Event[Any], ctx: Context) -> dict[str, str]:
    await ctx.step("before", _effect, ctx, event.id, "step:before")
    await ctx.sleep("nap", float(os.environ.get("WAITS_SLEEP", "3")))
    _write(ctx, event.id, "woke")
    await ctx.step("after", _effect, ctx, event.id, "step:after")
    return {"slept": event.id}


async def waiter(event: Event[Any], ctx: Context) -> dict[str, str | None]:
    await ctx.step("before", _effect, ctx, event.id, "step:before")
    paid = await ctx.wait_for_event(
        "payment",
        "test/paid",
        match="async.data.order == event.data.order",
        timeout=float(os.environ.get("WAITS_TIMEOUT", "60")),
    )
    _write(ctx, event.id, "woke")
    _write(ctx, event.id, f"paid:{paid.id if paid is not None else 'none'}")
    return {"paid": paid.id if paid is not None else None}


async def cancellable(event: Event[Any], ctx: Context) -> dict[str, str]:
    """Writes ``start`` on every execution, sleeps, then writes ``woke``."""
    _write(ctx, event.id, "start")
    await ctx.sleep("nap", float(os.environ.get("WAITS_SLEEP", "3")))
    _write(ctx, event.id, "woke")
    return {"done": event.id}
