"""The dead-letter endpoints of the bridge's HTTP face: list, show, replay, discard.

``GET /v1/dead-letters`` (``status``, ``handler``, ``limit``, ``offset``),
``GET /v1/dead-letters/{id}``, ``POST /v1/dead-letters/{id}/replay``
(``handler``, ``force``) and ``POST /v1/dead-letters/{id}/discard``. Who may call
them is the server's admission middleware's business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from aiohttp import web

import bridge.jsonio as jsonio
from bridge.deadletters import ReplayError, discard, force_flag, handler_keys, replay

if TYPE_CHECKING:
    from bridge.running import RunningBridge
    from bridge.store.contracts import DeadLetterStatus


def problem(status: int, message: str, **extra: Any) -> web.Response:
    """A JSON error answer: ``{"error": message, ...}``."""
    return web.json_response({"error": message, **extra}, status=status, dumps=dumps)


def dumps(value: Any) -> str:
    """JSON text for an answer; values JSON has no type for become their ``str``."""
    return jsonio.dumps(value, default=str).decode()


class DeadLetterApi:
    """The dead-letter endpoints, bound to a running bridge."""

    def __init__(self, runtime: RunningBridge) -> None:
        self.runtime = runtime

    def routes(self) -> list[web.RouteDef]:
        """The routes to mount on the server."""
        return [
            web.get("/v1/dead-letters", self.list_dead_letters),
            web.get("/v1/dead-letters/{id}", self.get_dead_letter),
            web.post("/v1/dead-letters/{id}/replay", self.replay_dead_letter),
            web.post("/v1/dead-letters/{id}/discard", self.discard_dead_letter),
        ]

    async def list_dead_letters(self, request: web.Request) -> web.Response:
        status = request.query.get("status")
        if status not in (None, "pending", "replayed", "discarded"):
            return problem(400, "status is pending, replayed or discarded")
        try:
            limit = min(int(request.query.get("limit", "100")), 1000)
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            return problem(400, "limit and offset are integers")
        letters = await self.runtime.store.dead_letters(
            status=cast("DeadLetterStatus | None", status),
            handler=request.query.get("handler"),
            limit=limit,
            offset=offset,
        )
        return web.json_response({"items": [d.to_dict() for d in letters]}, dumps=dumps)

    async def get_dead_letter(self, request: web.Request) -> web.Response:
        letter = await self.runtime.store.dead_letter_get(request.match_info["id"])
        if letter is None:
            return problem(404, "no such dead letter")
        return web.json_response(letter.to_dict(), dumps=dumps)

    async def replay_dead_letter(self, request: web.Request) -> web.Response:
        """``?handler=`` replays to another handler; ``?force=true`` replays a discarded letter.

        202 once queued; 409 when it would run nothing (the handler already
        succeeded for the event) or was discarded, with the letter unchanged.
        """
        handler = request.query.get("handler")
        if handler is not None and handler not in self.runtime.handlers:
            return problem(400, f"no handler {handler!r}")
        try:
            entry = await replay(
                self.runtime.store,
                request.match_info["id"],
                handler,
                force=force_flag(request.query.get("force")),
                key_of=handler_keys(self.runtime.handlers),
            )
        except ReplayError as exc:
            return problem(exc.status, str(exc))
        self.runtime.inbox.wakeup.set()
        return web.json_response(
            {"replayed": request.match_info["id"], "inbox_id": entry.id, "handler": entry.handler},
            status=202,
        )

    async def discard_dead_letter(self, request: web.Request) -> web.Response:
        try:
            await discard(self.runtime.store, request.match_info["id"])
        except ReplayError as exc:
            return problem(exc.status, str(exc))
        return web.json_response({"discarded": request.match_info["id"]})
