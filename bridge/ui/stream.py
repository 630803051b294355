"""``GET /ui/api/stream``: server-sent events that tell the UI's pages what changed.

Fed by the run history (``HistoryRecorder.feed``): after each batch the recorder
wrote, one ``history`` event with ``{"events": [...], "parents": [...], "all": bool}``;
a page reloads what it shows only when it shows one of those events (or on
``all``). A comment line every ``KEEPALIVE`` seconds keeps proxies from closing an
idle stream. The stream ends when the history closes (the bridge stops); the
browser's ``EventSource`` then reconnects by itself. With the history off, or too
many pages open, the stream says so in a ``closed`` event and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import web

import bridge.jsonio as jsonio

if TYPE_CHECKING:
    from bridge.running import RunningBridge

KEEPALIVE = 15.0
RETRY_MS = 2000


def _frame(kind: str, data: object) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + jsonio.dumps(data) + b"\n\n"


async def stream(runtime: RunningBridge, request: web.Request) -> web.StreamResponse:
    """Send history notices as server-sent events until the client or the history goes."""
    history = runtime.history
    queue = history.feed.subscribe() if history is not None else None
    resp = web.StreamResponse(
        headers={
            "content-type": "text/event-stream",
            "cache-control": "no-store",
            "x-accel-buffering": "no",  # a proxy in front must not hold the events back
        }
    )
    await resp.prepare(request)
    try:
        await resp.write(f"retry: {RETRY_MS}\n\n".encode())
        if queue is None:
            why = "the run history is off" if history is None else "too many live pages open"
            await resp.write(_frame("closed", {"reason": why}))
            return resp
        await resp.write(_frame("ready", {}))
        while True:
            try:
                notice = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if notice is None:  # the history closed: the bridge is stopping
                break
            body = {"events": notice.events, "parents": notice.parents, "all": notice.all}
            await resp.write(_frame("history", body))
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
    except ConnectionResetError:
        pass  # the page went away
    finally:
        if queue is not None and history is not None:
            history.feed.unsubscribe(queue)
    return resp
