"""The developer UI, served by the bridge's own server under ``/ui``.

Plain HTML, CSS and JavaScript in ``bridge/ui/static`` (no CDN, no build step),
and a JSON API under ``/ui/api`` (``bridge.ui.api``) that reads the run history,
dead letters, the catalog and the connectors' status from the runtime. Access
control is the server's: ``/ui`` is an admin prefix (``server.admin``).

Pages (one document, switched by the URL fragment): events, one event's fan-out
tree, dead letters, send a test event, status.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from bridge.ui.api import UiApi

if TYPE_CHECKING:
    from bridge.running import RunningBridge

__all__ = ["STATIC", "routes"]

STATIC = Path(__file__).resolve().parent / "static"


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


def routes(runtime: RunningBridge) -> list[web.AbstractRouteDef]:
    """Every route of the UI: the page, its assets and its JSON API."""
    return [
        web.get("/ui", _index),
        web.get("/ui/", _index),
        web.static("/ui/static", STATIC, append_version=False),
        *UiApi(runtime).routes(),
    ]
