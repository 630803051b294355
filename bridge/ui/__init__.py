"""The developer UI, served by the bridge's own server under ``/ui``.

Plain HTML, CSS and JavaScript in ``bridge/ui/static`` (no CDN, no build step),
and a JSON API under ``/ui/api`` (``bridge.ui.api``) that reads the run history,
dead letters, the catalog and the connectors' status from the runtime. Access
control is the server's: ``/ui`` is an admin prefix (``server.admin``). The page is
rendered with the server's CSRF token, which the UI's JavaScript sends with every
action (``X-CSRF-Token``); the server refuses an action without it.

Pages (one document, switched by the URL fragment): events, one event's fan-out
tree (with its timeline, handler cards and joins), dead letters, open joins, send a
test event, status. Pages update live from server-sent events (``/ui/api/stream``,
fed by the run history), never by polling.

The page is served with a Content-Security-Policy that allows nothing but this
server: no inline script or style, no other origin, no framing. The UI loads
nothing from the internet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from bridge.ui.api import UiApi

if TYPE_CHECKING:
    from bridge.running import RunningBridge

__all__ = ["CSP", "STATIC", "routes"]

STATIC = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _page(csrf_token: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    text = (STATIC / "index.html").read_text().replace("{{csrf_token}}", csrf_token)

    async def index(request: web.Request) -> web.Response:
        # no-store: a page cached from an earlier run would carry a stale token.
        return web.Response(
            text=text,
            content_type="text/html",
            headers={
                "cache-control": "no-store",
                "content-security-policy": CSP,
                "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer",
            },
        )

    return index


def routes(runtime: RunningBridge, csrf_token: str) -> list[web.AbstractRouteDef]:
    """Every route of the UI: the page (rendered with ``csrf_token``), its assets and
    its JSON API."""
    index = _page(csrf_token)
    return [
        web.get("/ui", index),
        web.get("/ui/", index),
        web.static("/ui/static", STATIC, append_version=False),
        *UiApi(runtime).routes(),
    ]
