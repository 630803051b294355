"""The bridge's HTTP face: health, readiness, metrics, the event API and dead letters.

``POST /v1/events`` accepts one structured CloudEvent, a JSON array of them
(``application/cloudevents-batch+json`` or ``application/json``), or data in
CloudEvents binary mode (``ce-type`` header, optional ``ce-id``, ``ce-source``;
values percent-decoded; data JSON, text or bytes by its content type, as
``bridge.normalize.binary_data`` reads it). Each event's attributes, type and data
are validated first (422 with the errors, nothing stored); then the events are
committed to the inbox (bytes as ``data_base64``) and the answer is 202 with their
ids. A repeated event id is accepted again as a no-op. ``traceparent``,
``tracestate`` and ``baggage`` headers go with the events that carry none.

A browser next to a local bridge is kept out (``browser_refusal``): a ``Host`` that is not
loopback, an IP literal, the listen host or in ``server.allowed_hosts`` is refused 403
(DNS rebinding); a request that may change state (not GET/HEAD/OPTIONS) from another
site (``Sec-Fetch-Site``, or an ``Origin`` that is not the bridge's) is refused 403; the
UI's own actions carry its per-process CSRF token; and the event API takes only JSON and
CloudEvents content types (or binary mode with ``ce-`` headers), so no form or
``text/plain`` "simple request" gets in without a CORS preflight (415 otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bridge import jsonio, ui
from bridge.admission import (
    ADMIN_PREFIXES,
    bearer_ok,
    browser_refusal,
    content_type_refusal,
    cookie_ok,
    denied,
    loopback,
    token_login,
    under,
)
from bridge.attributes import SPECVERSION, check_attributes, structured_data
from bridge.deadletter_api import DeadLetterApi, problem
from bridge.errors import BridgeError, InvalidEvent, StoreError
from bridge.events import new_id, now_iso
from bridge.normalize import (
    MAX_JSON_DEPTH,
    binary_attributes,
    binary_data,
    decode_json,
    header,
    text_headers,
    trace_headers,
)
from bridge.redaction import redact as redact  # re-exported: the CLI redacts with it
from bridge.store.contracts import InboxEntry

if TYPE_CHECKING:
    from bridge.running import RunningBridge

log = logging.getLogger("bridge.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyTimeout(TimeoutError):
    """The request body did not arrive in full within ``server.body_timeout``."""


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse with the offending bytes, a header line
    that may hold a token: keep the fact as a warning, drop the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "malformed HTTP request from %s refused"
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.status = exc.code
        return True


http_log = logging.getLogger("bridge.http")
http_log.addFilter(_MalformedRequests())


def _bind_failure(listen: str, port: int, exc: OSError) -> str:
    """One line saying why the server cannot listen, and how to choose another address."""
    if exc.errno == errno.EADDRINUSE:
        why = f"port {port} is already in use"
    else:
        why = exc.strerror or str(exc)
    return (
        f"cannot listen on {listen}: {why}; choose another with --listen HOST:PORT or server.listen"
    )


class Server:
    """The aiohttp application bound to a runtime."""

    def __init__(self, runtime: RunningBridge) -> None:
        self.runtime = runtime
        cfg = runtime.cfg
        self.token = cfg.server.api.token
        self.admin = cfg.server.admin
        self.admin_token = cfg.server.admin.token or cfg.server.api.token
        self.allowed_hosts = (*cfg.server.allowed_hosts, cfg.server.host.lower())
        # Per process: a page rendered by an earlier run is told to reload.
        self.csrf_token = secrets.token_urlsafe(32)
        self.app = web.Application(
            client_max_size=cfg.limits.max_body_bytes,
            middlewares=[self._front],
        )
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/metrics", self.metrics)
        if cfg.server.api.enabled:
            self.app.router.add_post("/v1/events", self.post_events)
        self.app.router.add_routes(DeadLetterApi(runtime).routes())
        for ingress in runtime.ingresses.values():
            self.app.router.add_routes(ingress.routes())
        if cfg.server.ui.enabled:
            self.app.router.add_routes(ui.routes(runtime, self.csrf_token))
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        cfg = self.runtime.cfg.server
        self._runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=cfg.idle_timeout,
            logger=http_log,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        try:
            await site.start()
        except OSError as exc:  # a busy port, a host that is not ours, a port below 1024
            await self._runner.cleanup()
            self._runner = None
            raise BridgeError(_bind_failure(cfg.listen, cfg.port, exc)) from exc

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _front(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every request's checks, in the order they apply, in one middleware (one frame a
        request, not one a check): what a browser could send (``browser_refusal``), the tokens
        (``_guard``), then the handler within the body's deadline (``_within_deadline``);
        an HTTP error or a store fault raised by any of them is answered as JSON."""
        try:
            refusal = browser_refusal(request, self.allowed_hosts, self.csrf_token)
            if refusal is None:
                refusal = self._guard(request)
            if refusal is not None:
                return refusal
            content = request.content
            if content.is_eof():  # the whole body is in (or there is none): no deadline
                return await handler(request)
            return await self._within_deadline(request, handler, content)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                return problem(exc.status, exc.reason)
            raise
        except StoreError as exc:
            log.error("store unavailable", extra={"path": request.path, "error": str(exc)})
            return problem(503, "the store is unavailable; nothing was accepted, try again")

    def _guard(self, request: web.Request) -> web.Response | None:
        """The event API's token; the admin endpoints' loopback rule and token: a refusal,
        or None. Checked before any handler reads the body.

        403 for a client that is not on loopback when ``server.admin.local_only`` is
        set, 401 for a missing or wrong token (``Authorization: Bearer``, or the UI's
        cookie for admin paths). (What a web page in the user's browser could send is
        refused before: ``bridge.admission.browser_refusal``.)
        """
        path = request.path
        if under(path, ("/v1/events",)):
            if not bearer_ok(request, self.token):
                return denied(401, "missing or wrong bearer token")
        elif self._is_admin(request):
            if self.admin.local_only and not loopback(request.remote):
                return denied(403, "the admin endpoints answer loopback clients only")
            if self.admin_token and request.method == "GET" and "token" in request.query:
                return token_login(request, self.admin_token)
            if not (bearer_ok(request, self.admin_token) or cookie_ok(request, self.admin_token)):
                return denied(401, "missing or wrong bearer token")
        return None

    def _is_admin(self, request: web.Request) -> bool:
        prefixes = (*ADMIN_PREFIXES, "/metrics") if self.admin.metrics else ADMIN_PREFIXES
        if under(request.path, prefixes):
            return True
        # The matched route too, so no spelling of a path reaches an admin route unguarded.
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else ""
        return bool(canonical) and under(canonical, prefixes)

    async def _within_deadline(
        self, request: web.Request, handler: Handler, content: StreamReader
    ) -> web.StreamResponse:
        """A body that has not arrived in full within ``server.body_timeout`` fails its
        reader with ``BodyTimeout``: answered 408, and the connection is closed."""
        timeout = self.runtime.cfg.server.body_timeout
        expired = False

        def expire() -> None:
            nonlocal expired
            if not content.is_eof():
                expired = True
                content.set_exception(BodyTimeout(f"the body did not arrive within {timeout}s"))

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            return await handler(request)
        except BodyTimeout:
            if not expired:
                raise
            log.warning("request body timed out", extra={"path": request.path})
            response = problem(408, f"the body did not arrive within {timeout:g}s")
            response.force_close()
            return response
        finally:
            timer.cancel()

    # ------------------------------------------------------------------ health

    async def healthz(self, request: web.Request) -> web.Response:
        """Alive unless the event loop is wedged (it answers this late, or not at all)."""
        lag = self.runtime.loop_lag
        wedged = lag > self.runtime.cfg.server.wedged_after
        body = {"status": "wedged" if wedged else "ok", "event_loop_lag_seconds": round(lag, 4)}
        return web.json_response(body, status=503 if wedged else 200)

    async def readyz(self, request: web.Request) -> web.Response:
        runtime = self.runtime
        store_ok = await runtime.store.ping()
        connectors = {
            name: {"connected": s.connected, "detail": redact(s.detail) if s.detail else s.detail}
            for name, s in runtime.statuses().items()
        }
        ready = runtime.ready and store_ok
        body = {"ready": ready, "store": {"ok": store_ok}, "connectors": connectors}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.runtime.metrics.render(), content_type="text/plain")

    # ------------------------------------------------------------------ event API

    async def post_events(self, request: web.Request) -> web.Response:
        refusal = content_type_refusal(request)
        if refusal is not None:
            return problem(415, refusal)
        body = await request.read()
        if not body:
            return problem(400, "empty body")
        try:
            raw_events = self._parse(body, request)
        except InvalidEvent as exc:
            self._count_invalid([exc.reason])
            return problem(400, str(exc))
        entries, errors = self._validate(raw_events, request)
        if errors:
            self._count_invalid(str(e["error"]) for e in errors)
            status = 413 if all(e["error"] == "too_large" for e in errors) else 422
            return problem(status, "invalid events; none was accepted", details=errors)
        fresh = await self.runtime.inbox.put(entries)
        accepted = [e.id for e, new in zip(entries, fresh, strict=True) if new]
        duplicates = [e.id for e, new in zip(entries, fresh, strict=True) if not new]
        return web.json_response(
            {"ids": [e.id for e in entries], "accepted": accepted, "duplicates": duplicates},
            status=202,
        )

    def _count_invalid(self, reasons: Iterable[str]) -> None:
        """Count refused events in ``bridge_events_invalid_total{connector="api"}``."""
        for reason in reasons:
            if reason == "unknown event type":
                reason = "unknown_type"
            elif not reason.isidentifier():  # "type must be a non-empty string", ...
                reason = "invalid_cloudevent"
            self.runtime.metrics.inc(
                "bridge_events_invalid_total", (("connector", "api"), ("reason", reason))
            )

    def _parse(self, body: bytes, request: web.Request) -> list[dict[str, Any]]:
        headers = text_headers(request.headers)
        # Binary mode; the event API is lenient: ce-type alone is enough.
        attrs = binary_attributes(headers, required="type")
        if attrs is not None:
            event: dict[str, Any] = dict(attrs)
            content_type = attrs.get("datacontenttype") or header(headers, "content-type")
            if content_type:
                event["datacontenttype"] = content_type
            data = binary_data(body, content_type)
            if isinstance(data, bytes):
                event["data_base64"] = base64.b64encode(data).decode("ascii")
            else:
                event["data"] = data
            return [event]
        payload = decode_json(body)
        if isinstance(payload, list):
            if not payload:
                raise InvalidEvent("empty_batch", "the batch holds no events")
            if not all(isinstance(item, dict) for item in payload):
                raise InvalidEvent(
                    "invalid_batch", "every item of a batch must be a CloudEvent object"
                )
            return payload
        if (
            isinstance(payload, dict)
            and "type" in payload
            and ("specversion" in payload or "data" in payload)
        ):
            return [payload]
        raise InvalidEvent(
            "not_an_event",
            "send a CloudEvent (with specversion, type and data), an array of them,"
            " or JSON data with a ce-type header",
        )

    def _validate(
        self, raw_events: list[dict[str, Any]], request: web.Request
    ) -> tuple[list[InboxEntry], list[dict[str, Any]]]:
        catalog = self.runtime.catalog
        headers = text_headers(request.headers)  # values that JSON can hold
        correlation = headers.get("x-correlation-id")
        trace = dict(
            zip(("traceparent", "tracestate", "baggage"), trace_headers(headers), strict=True)
        )
        entries: list[InboxEntry] = []
        errors: list[dict[str, Any]] = []
        for index, raw in enumerate(raw_events):
            event_type = raw.get("type")
            if not isinstance(event_type, str) or not event_type:
                errors.append({"index": index, "error": "type must be a non-empty string"})
                continue
            event = dict(raw)
            event_id = event.get("id")
            if event_id is None:
                event["id"] = new_id()
            elif not isinstance(event_id, str) or not event_id:
                errors.append(
                    {"index": index, "type": event_type, "error": "id must be a non-empty string"}
                )
                continue
            event.setdefault("specversion", SPECVERSION)
            event.setdefault("source", "bridge://api")
            event.setdefault("time", now_iso())
            if correlation and "correlationid" not in event:
                event["correlationid"] = correlation
            if trace["traceparent"] and "traceparent" not in event:
                event.update((k, v) for k, v in trace.items() if v and k not in event)
            try:
                event = check_attributes(event)
                data = structured_data(event)
            except InvalidEvent as exc:
                errors.append(
                    {"index": index, "type": event_type, "error": exc.reason, "details": exc.detail}
                )
                continue
            schema = catalog.resolve(event_type)
            if schema is None:
                errors.append({"index": index, "type": event_type, "error": "unknown event type"})
                continue
            try:
                schema.validate(data)
            except InvalidEvent as exc:
                errors.append(
                    {"index": index, "type": event_type, "error": "schema", "details": exc.detail}
                )
                continue
            body = jsonio.dumps(event)
            refusal = self._unstorable(body)
            if refusal is not None:
                errors.append({"index": index, "type": event_type, **refusal})
                continue
            entries.append(
                InboxEntry(
                    id=event["id"], body=body, source="api", event_source=str(event["source"])
                )
            )
        return entries, errors

    def _unstorable(self, body: bytes) -> dict[str, Any] | None:
        """Why the inbox could not deliver this stored event, if it could not: larger
        than the limit once the bridge's attributes (and the correlation id and
        traceparent headers) are added, or nested too deeply once in its envelope."""
        limit = self.runtime.cfg.limits.max_body_bytes
        if len(body) > limit:
            return {
                "error": "too_large",
                "details": f"{len(body)} bytes once stored, limit {limit}",
            }
        if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
            try:
                decode_json(body)
            except InvalidEvent as exc:
                return {"error": exc.reason, "details": str(exc.detail)}
        return None


async def wait_until_serving(url: str, timeout: float = 10.0) -> None:
    """Poll ``url`` until it answers (used by tests and ``bridge send``)."""
    import aiohttp

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout}s")
            await asyncio.sleep(0.1)
