"""``type: http``: deliver each event to the application over HTTP, the way a sidecar does.

One request per attempt (POST by default) to ``url`` (a template over the event).
CloudEvents binary mode by default: the attributes travel as ``ce-`` headers
(percent-encoded as the HTTP binding requires) and the body is the data (JSON,
the text itself for a text content type, bytes as they are); ``mode: structured``
sends the whole envelope as ``application/cloudevents+json`` (bytes as
``data_base64``). ``traceparent``/``tracestate``/``baggage`` and
``x-correlation-id`` always go along, plus the
``headers`` templates and the optional ``auth`` header. Each handler has its own
connection pool (``max_connections``), opened on first use and closed at shutdown.
Redirects are not followed.

Outcomes by answer:

* 2xx: success; a JSON body (up to ``max_result_bytes``) is the run's result.
* 408, 429 (and any status in ``retry_on``), 5xx, connection errors, timeouts:
  retried by the handler's policy; a ``Retry-After`` (seconds or an HTTP date,
  capped at ``max_retry_after``) is the shortest wait before the next attempt.
* any other status (other 4xx, 3xx): dead-lettered at once (``Fatal``).

Every failure names the method, the URL without credentials or query, and the
status; the dead letter's ``detail`` holds ``{"status", "body"}`` (the body cut to
64 KiB). The auth header's value is never logged.

Delivery is at least once: an attempt that timed out or lost its connection may
have been processed by the application, and is sent again. The application
should treat ``ce-id`` (the event id) as an idempotency key.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

import bridge.jsonio as jsonio
from bridge.duration import Duration
from bridge.errors import BridgeError, Fatal, RetryAfter
from bridge.events import Event
from bridge.handling import HandlerConfig, HandlerEnv
from bridge.templates import EVENT_ROOTS, Template, TemplateError, event_scope
from handlers.publish import message_headers

if TYPE_CHECKING:
    from bridge.context import Context

_KEPT_BODY = 65_536
_USER_AGENT = "fanout-bridge/0.1"


class HttpAuth(BaseModel):
    """A header carrying a credential, e.g. ``{header: authorization, value: "Bearer ${TOKEN}"}``."""

    model_config = ConfigDict(extra="forbid")

    header: str = Field("authorization", description="Header name.")
    value: str = Field(description="Header value; use `${VAR}` or `${file:PATH}`.")


class HttpHandlerConfig(HandlerConfig):
    """Send each event to an HTTP endpoint of the application."""

    type: Literal["http"] = Field("http", description="Handler kind: deliver the event over HTTP.")
    url: str = Field(
        description="Endpoint URL (a template over the event, e.g. `.../{type}`).",
        examples=["http://127.0.0.1:8080/events", "http://app:8080/hooks/{type}"],
    )
    method: Literal["POST", "PUT", "PATCH"] = Field("POST", description="HTTP method.")
    mode: Literal["binary", "structured"] = Field("binary", description="CloudEvents content mode.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers (templates).")
    auth: HttpAuth | None = Field(None, description="A credential header sent with each request.")
    max_connections: int = Field(100, ge=1, description="Size of this handler's connection pool.")
    retry_on: list[int] = Field(
        default_factory=lambda: [408, 429],
        description="Statuses below 500 that are retried; every other 4xx is dead-lettered.",
    )
    max_retry_after: Duration = Field(300.0, description="Longest `Retry-After` honoured.")
    max_result_bytes: int = Field(
        65_536, ge=0, description="A larger JSON answer is not kept as the result (the ledger)."
    )

    def check(self, cfg: Any) -> list[tuple[tuple[str, ...], str]]:
        problems: list[tuple[tuple[str, ...], str]] = []
        try:
            url = Template(self.url, EVENT_ROOTS)
        except TemplateError as exc:
            problems.append((("url",), str(exc)))
        else:
            if url.is_static and URL(self.url).scheme not in ("http", "https"):
                problems.append((("url",), "url must start with http:// or https://"))
        for name, text in self.headers.items():
            try:
                Template(text, EVENT_ROOTS)
            except TemplateError as exc:
                problems.append((("headers", name), str(exc)))
        return problems


class HttpStatusError(BridgeError):
    """A retriable answer (408, 429, 5xx ...); ``detail`` holds the status and body."""

    def __init__(self, message: str, detail: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = detail


class HttpRetryAfter(RetryAfter):
    """A retriable answer with a ``Retry-After``; ``detail`` holds the status and body."""

    def __init__(self, message: str, delay: float, detail: dict[str, Any]) -> None:
        super().__init__(message, delay)
        self.detail = detail


class HttpRejected(Fatal):
    """An answer that retrying cannot change (4xx, 3xx); ``detail`` holds the status and body."""

    def __init__(self, message: str, detail: dict[str, Any]) -> None:
        super().__init__(message)
        self.detail = detail


class HttpUnreachable(BridgeError):
    """The request did not get an answer (connection refused or reset, TLS error ...)."""


class HttpHandler:
    """Posts events to one endpoint through its own connection pool."""

    def __init__(self, cfg: HttpHandlerConfig, env: HandlerEnv) -> None:
        self.cfg = cfg
        self.url = Template(cfg.url, EVENT_ROOTS)
        self.headers = {k: Template(v, EVENT_ROOTS) for k, v in cfg.headers.items()}
        self.retry_on = frozenset(cfg.retry_on)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop; one pool per handler.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.cfg.max_connections),
                timeout=aiohttp.ClientTimeout(total=None),  # the dispatcher times attempts
                headers={"user-agent": _USER_AGENT},
            )
        return self._session

    async def invoke(self, event: Event[Any], ctx: Context) -> Any:
        scope = event_scope(event)
        try:
            url = self.url.render_str(scope)
            headers = message_headers(event, self.cfg.mode, "ce-")
            for name, template in self.headers.items():
                headers[name] = template.render_str(scope)
        except TemplateError as exc:
            raise Fatal(f"cannot build the request: {exc}") from None
        if self.cfg.auth is not None:
            headers[self.cfg.auth.header] = self.cfg.auth.value
        body = event.to_json() if self.cfg.mode == "structured" else event.data_bytes()
        return await self._request(url, headers, body)

    async def invoke_batch(self, events: Sequence[Event[Any]], ctx: Context) -> Any:
        """POST the events as one CloudEvents JSON batch (``batch``): a JSON array of
        structured events, ``application/cloudevents-batch+json``. The URL, headers and
        trace context come from the first event."""
        first = events[0]
        scope = event_scope(first)
        try:
            url = self.url.render_str(scope)
            headers = message_headers(first, "structured", "ce-")
            for name, template in self.headers.items():
                headers[name] = template.render_str(scope)
        except TemplateError as exc:
            raise Fatal(f"cannot build the request: {exc}") from None
        headers["content-type"] = "application/cloudevents-batch+json"
        if self.cfg.auth is not None:
            headers[self.cfg.auth.header] = self.cfg.auth.value
        body = b"[" + b",".join(e.to_json() for e in events) + b"]"
        return await self._request(url, headers, body)

    async def _request(self, url: str, headers: dict[str, str], body: bytes) -> Any:
        method = self.cfg.method
        where = f"{method} {_safe(url)}"
        try:
            async with self._client().request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return await self._result(resp)
                status = resp.status
                text = await _kept_text(resp)
                retry_after = resp.headers.get("retry-after")
        except aiohttp.InvalidURL as exc:
            raise Fatal(f"{where}: invalid URL") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise HttpUnreachable(f"{where}: {_describe(exc)}") from exc
        raise self._failure(where, status, text, retry_after)

    def _failure(self, where: str, status: int, text: str, retry_after: str | None) -> BridgeError:
        detail = {"status": status, "body": text}
        message = (
            f"{where} answered {status}: {text[:500]}" if text else f"{where} answered {status}"
        )
        if status >= 500 or status in self.retry_on:
            delay = _retry_after_seconds(retry_after)
            if delay is not None:
                return HttpRetryAfter(message, min(delay, self.cfg.max_retry_after), detail)
            return HttpStatusError(message, detail)
        return HttpRejected(message, detail)

    async def _result(self, resp: aiohttp.ClientResponse) -> Any:
        if resp.status == 204 or "json" not in (resp.content_type or ""):
            return None
        length = resp.content_length
        limit = self.cfg.max_result_bytes
        if length is not None and length > limit:
            return None
        raw = await _read_up_to(resp, limit + 1)
        if len(raw) > limit or not raw:
            return None
        try:
            return jsonio.loads(raw)
        except orjson.JSONDecodeError:
            return None

    async def close(self) -> None:
        """Close the connection pool (the runtime calls it at shutdown)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _read_up_to(resp: aiohttp.ClientResponse, size: int) -> bytes:
    """The body's first ``size`` bytes (all of it when shorter); the rest is left unread."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = await resp.content.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


async def _kept_text(resp: aiohttp.ClientResponse) -> str:
    return (await _read_up_to(resp, _KEPT_BODY)).decode("utf-8", "replace")


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _safe(url: str) -> str:
    """The URL without credentials or query, for messages."""
    try:
        return str(URL(url).with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<invalid url>"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build(cfg: HttpHandlerConfig, env: HandlerEnv) -> HttpHandler:
    return HttpHandler(cfg, env)
