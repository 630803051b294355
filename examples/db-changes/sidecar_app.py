"""The application beside the bridge: receives the ``http`` handlers' CloudEvents.

``POST /events/<name>`` answers 200 with a small JSON body (kept by the bridge as
the run's result), 401 without the bearer token (dead-lettered at once), and
counts what it received. Run: ``python examples/db-changes/sidecar_app.py``
(``APP_PORT``, default 8080; ``APP_TOKEN`` must match the bridge's, default
the example's dev-only token).
"""

from __future__ import annotations

import hmac
import os
from collections import Counter

from aiohttp import web

RECEIVED: web.AppKey[Counter[str]] = web.AppKey("received", Counter)
TOKEN: web.AppKey[str] = web.AppKey("token", str)


async def receive(request: web.Request) -> web.Response:
    token = request.app[TOKEN]
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return web.json_response({"error": "unauthorized"}, status=401)
    name = request.match_info["name"]
    if request.content_type == "application/cloudevents+json":
        envelope = await request.json()
        event_id, event_type, data = envelope["id"], envelope["type"], envelope["data"]
    else:  # binary mode: attributes in ce- headers, the body is the data
        event_id, event_type = request.headers["ce-id"], request.headers["ce-type"]
        data = await request.json()
    request.app[RECEIVED][name] += 1
    print(f"{name}: {event_type} {event_id} {data.get('op')} {data.get('table')}", flush=True)
    return web.json_response({"handled": event_id, "by": name})


def make_app(token: str) -> web.Application:
    app = web.Application()
    app[TOKEN] = token
    app[RECEIVED] = Counter()
    app.router.add_post("/events/{name}", receive)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(os.environ.get("APP_TOKEN", "dev-only-app-token")),
        host="127.0.0.1",
        port=int(os.environ.get("APP_PORT", "8080")),
    )
