"""The developer UI's JSON API under ``/ui/api``.

Every answer is JSON. Bad input is a 4xx with ``{"error": message}``; an unknown
id is 404; the store being down is 503 (the server's middleware). Nothing here
writes to the store except replay, discard and send, which go through the same
paths as ``bridge dlq`` and the event API (the inbox).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

import bridge.jsonio as jsonio
from bridge.deadletters import ReplayError, discard, force_flag, handler_keys, replay
from bridge.errors import InvalidEvent
from bridge.events import SPECVERSION, new_id, now_iso
from bridge.store.contracts import InboxEntry
from bridge.ui.joins import join_ids, joins_of, open_joins
from bridge.ui.stats import HandlerStats
from bridge.ui.stream import stream
from bridge.ui.tree import fan_out_tree, in_config_order, subtree_statuses, worst
from bridge.ui.views import (
    BadQuery,
    dead_letters_filtered,
    event_summary,
    events_page,
    example_of,
    letter_view,
    letters_of_event,
    page_limit,
    run_view,
)

if TYPE_CHECKING:
    from bridge.running import RunningBridge

BULK_LIMIT = 1000


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=jsonio.dumps(body, default=str), status=status, content_type="application/json"
    )


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = jsonio.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadQuery(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadQuery("the body must be a JSON object")
    return body


def _text(query: Any, name: str) -> str | None:
    value = query.get(name)
    return value if value else None


class UiApi:
    """Request handlers bound to one runtime."""

    def __init__(self, runtime: RunningBridge) -> None:
        self.runtime = runtime
        self.order = runtime_handler_ids(runtime)
        self.stats = HandlerStats(runtime.metrics, self.order)
        self.join_configs = {h.id: h for h in runtime.cfg.handlers if h.type == "join"}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ui/api/events", self.list_events),
            web.get("/ui/api/events/{id}", self.get_event),
            web.get("/ui/api/joins", self.list_joins),
            web.get("/ui/api/stream", self.stream),
            web.get("/ui/api/dead-letters", self.list_dead_letters),
            web.post("/ui/api/dead-letters/replay", self.replay_many),
            web.post("/ui/api/dead-letters/{id}/replay", self.replay_one),
            web.post("/ui/api/dead-letters/{id}/discard", self.discard_one),
            web.get("/ui/api/catalog", self.catalog),
            web.post("/ui/api/validate", self.validate),
            web.post("/ui/api/send", self.send),
            web.get("/ui/api/status", self.status),
        ]

    # ------------------------------------------------------------------ events

    async def list_events(self, request: web.Request) -> web.Response:
        """``?type=&status=&q=&before=&limit=`` -> ``{"items": [...], "next": cursor|null}``.

        Each item carries ``aggregate``: the worst status of its tree (None without
        descendants)."""
        query = request.query
        try:
            items, cursor = await events_page(
                self.runtime.store,
                type=_text(query, "type"),
                status=_text(query, "status"),
                search=(query.get("q") or "").strip() or None,
                before=_text(query, "before"),
                limit=page_limit(query.get("limit")),
            )
        except BadQuery as exc:
            return _error(400, str(exc))
        below = await subtree_statuses(self.runtime.store, items)
        rows = []
        for r in items:
            row = event_summary(r)
            # The worst status in the row's whole tree: a root whose grandchild was
            # dead-lettered says so here too (None: the event has no descendants).
            row["aggregate"] = worst([r.status, below[r.id]]) if r.id in below else None
            rows.append(row)
        return _json({"items": rows, "next": cursor})

    async def get_event(self, request: web.Request) -> web.Response:
        """One event: envelope, runs (config order) with attempts and dead letters,
        children, the joins its runs opened or fed, and its whole fan-out ``tree``."""
        store = self.runtime.store
        event_id = request.match_info["id"]
        record = await store.history_event(event_id)
        if record is None:
            return _error(404, f"no event {event_id!r} in the run history")
        runs = in_config_order(await store.history_runs(event_id), self.order)
        children = await store.history_children(event_id)
        failed = [r.handler for r in runs if r.status == "dead_lettered"]
        letters = await letters_of_event(store, event_id, failed) if failed else {}
        body = event_summary(record)
        body["event"] = record.event
        body["runs"] = [run_view(r, letters.get(r.handler)) for r in runs]
        body["children"] = [event_summary(c) for c in children]
        body["joins"] = await joins_of(store, join_ids(runs), self.join_configs)
        body["tree"] = await fan_out_tree(store, record, self.order, {event_id: letters})
        return _json(body)

    async def list_joins(self, request: web.Request) -> web.Response:
        """``{"items": [...]}``: every open join, soonest deadline first."""
        return _json({"items": await open_joins(self.runtime.store, self.join_configs)})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: which events the history just wrote (``bridge.ui.stream``)."""
        return await stream(self.runtime, request)

    # ------------------------------------------------------------------ dead letters

    async def list_dead_letters(self, request: web.Request) -> web.Response:
        """``?status=&handler=&type=&limit=&offset=`` -> ``{"items": [...], "next_offset": n|null}``."""
        query = request.query
        try:
            limit = page_limit(query.get("limit"))
            offset = int(query.get("offset") or 0)
            if offset < 0:
                raise ValueError
        except ValueError:
            return _error(400, "offset must be a non-negative integer")
        except BadQuery as exc:
            return _error(400, str(exc))
        try:
            letters = await dead_letters_filtered(
                self.runtime.store,
                status=_text(query, "status"),
                handler=_text(query, "handler"),
                type=_text(query, "type"),
                limit=limit + 1,
                offset=offset,
            )
        except BadQuery as exc:
            return _error(400, str(exc))
        more = len(letters) > limit
        return _json(
            {
                "items": [letter_view(d) for d in letters[:limit]],
                "next_offset": offset + limit if more else None,
            }
        )

    async def replay_one(self, request: web.Request) -> web.Response:
        """Replay one letter to the handler that failed (or ``?handler=``); 202.

        409 when it would run nothing (the handler already succeeded) or was
        discarded and ``?force=true`` is not given; the letter is then unchanged.
        """
        letter_id = request.match_info["id"]
        handler = request.query.get("handler") or None
        if handler is not None and handler not in self.runtime.handlers:
            return _error(400, f"no handler {handler!r}")
        try:
            entry = await replay(
                self.runtime.store,
                letter_id,
                handler,
                force=force_flag(request.query.get("force")),
                key_of=handler_keys(self.runtime.handlers),
            )
        except ReplayError as exc:
            return _error(exc.status, str(exc))
        self.runtime.inbox.wakeup.set()
        return _json({"replayed": letter_id, "handler": entry.handler, "inbox_id": entry.id}, 202)

    async def discard_one(self, request: web.Request) -> web.Response:
        letter_id = request.match_info["id"]
        try:
            await discard(self.runtime.store, letter_id)
        except ReplayError as exc:
            return _error(exc.status, str(exc))
        return _json({"discarded": letter_id})

    async def replay_many(self, request: web.Request) -> web.Response:
        """Replay pending letters: ``{"ids": [...]}`` or a filter ``{"handler", "type"}``.

        Only pending letters are replayed; at most 1000 per call. 202 with what was
        replayed and, per letter, why one could not be.
        """
        try:
            body = await _body(request)
            ids = body.get("ids")
            if ids is not None:
                if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                    raise BadQuery("ids must be a list of dead-letter ids")
                if len(ids) > BULK_LIMIT:
                    raise BadQuery(f"at most {BULK_LIMIT} ids per call")
                targets = ids
            else:
                handler, event_type = body.get("handler"), body.get("type")
                for name, value in (("handler", handler), ("type", event_type)):
                    if value is not None and not isinstance(value, str):
                        raise BadQuery(f"{name} must be a string")
                letters = await dead_letters_filtered(
                    self.runtime.store,
                    status="pending",
                    handler=handler or None,
                    type=event_type or None,
                    limit=BULK_LIMIT,
                )
                targets = [d.id for d in letters if d.event is not None]
        except BadQuery as exc:
            return _error(400, str(exc))
        replayed: list[str] = []
        failed: list[dict[str, str]] = []
        store = self.runtime.store
        key_of = handler_keys(self.runtime.handlers)
        for letter_id in targets:
            letter = await store.dead_letter_get(letter_id)
            if letter is None or letter.status != "pending":
                why = "no such dead letter" if letter is None else f"it is {letter.status}"
                failed.append({"id": letter_id, "error": why})
                continue
            try:
                await replay(store, letter_id, key_of=key_of)
            except ReplayError as exc:
                failed.append({"id": letter_id, "error": str(exc)})
                continue
            replayed.append(letter_id)
        if replayed:
            self.runtime.inbox.wakeup.set()
        return _json({"replayed": replayed, "failed": failed}, 202)

    # ------------------------------------------------------------------ sending

    async def catalog(self, request: web.Request) -> web.Response:
        """The event types a test event may have, with their JSON Schema and an example."""
        catalog = self.runtime.catalog
        types = []
        for pattern in catalog.types():
            schema = catalog.schema_of(pattern)
            json_schema = schema.json_schema() if schema is not None else None
            types.append(
                {
                    "type": pattern,
                    "pattern": any(ch in pattern for ch in "*?["),
                    "schema": json_schema,
                    "example": example_of(json_schema),
                }
            )
        return _json({"types": types, "open": catalog.open})

    def _check(self, body: dict[str, Any]) -> tuple[str, Any, list[dict[str, Any]]]:
        event_type = body.get("type")
        if not isinstance(event_type, str) or not event_type.strip():
            raise BadQuery("type must be a non-empty string")
        if "data" not in body:
            raise BadQuery("data is required (any JSON value)")
        data = body["data"]
        if any(ch in event_type for ch in "*?["):
            return event_type, data, [{"loc": ["type"], "msg": "a type, not a pattern"}]
        schema = self.runtime.catalog.resolve(event_type)
        if schema is None:
            return event_type, data, [{"loc": ["type"], "msg": "unknown event type"}]
        try:
            schema.validate(data)
        except InvalidEvent as exc:
            detail = exc.detail if isinstance(exc.detail, list) else [{"loc": [], "msg": str(exc)}]
            return event_type, data, detail
        return event_type, data, []

    async def validate(self, request: web.Request) -> web.Response:
        """``{"type", "data"}`` -> ``{"valid": bool, "errors": [{loc, msg, type}]}``."""
        try:
            _, _, errors = self._check(await _body(request))
        except BadQuery as exc:
            return _error(400, str(exc))
        return _json({"valid": not errors, "errors": errors})

    async def send(self, request: web.Request) -> web.Response:
        """Validate and commit one event to the inbox, as ``POST /v1/events`` does.

        Body: ``{"type", "data", "id"?, "correlationid"?}``. 422 with the errors when
        invalid; 202 with the id otherwise (``duplicate: true`` when the id was known).
        """
        try:
            body = await _body(request)
            event_type, data, errors = self._check(body)
            for name in ("id", "correlationid"):
                value = body.get(name)
                if value is not None and (not isinstance(value, str) or not value):
                    raise BadQuery(f"{name} must be a non-empty string")
        except BadQuery as exc:
            return _error(400, str(exc))
        if errors:
            return _error(422, "invalid event; nothing was sent", errors=errors)
        event: dict[str, Any] = {
            "specversion": SPECVERSION,
            "id": body.get("id") or new_id(),
            "source": "bridge://ui",
            "type": event_type,
            "time": now_iso(),
            "data": data,
        }
        if body.get("correlationid"):
            event["correlationid"] = body["correlationid"]
        entry = InboxEntry(
            id=event["id"], body=jsonio.dumps(event), source="ui", event_source="bridge://ui"
        )
        (fresh,) = await self.runtime.inbox.put([entry])
        return _json({"id": event["id"], "duplicate": not fresh}, 202)

    # ------------------------------------------------------------------ status

    async def status(self, request: web.Request) -> web.Response:
        """Connectors (connected, detail, lag or queue depth) and handlers' recent figures."""
        connectors = [
            {
                "name": name,
                "connected": s.connected,
                "detail": s.detail,
                "lag": dict(s.lag),
                "backlog": sum(s.lag.values()),
            }
            for name, s in self.runtime.statuses().items()
        ]
        store_ok = await self.runtime.store.ping()
        return _json(
            {
                "ready": self.runtime.ready and store_ok,
                "store": {"ok": store_ok},
                "connectors": connectors,
                **self.stats.report(),
            }
        )


def runtime_handler_ids(runtime: RunningBridge) -> list[str]:
    """Every configured handler id, in config order."""
    return [h.id for h in runtime.cfg.handlers]
