"""``type: webhook``: database-change and event webhooks, received on the bridge's HTTP server.

One route per connector (``path``, default ``/hooks/<name>``), one provider each:
``supabase``, ``debezium``, ``planetscale``, ``cloudevents`` or ``json`` (see
``connectors.webhook_providers`` for the payloads, the data shape and the event
ids). A request is checked in this order, and nothing is stored unless it passes:

* 413: the declared Content-Length is over ``max_body_bytes``;
* 401: a shared-secret header is missing or wrong;
* 413: the body grows past the limit while it is read;
* 408: the body has not arrived in full within ``server.body_timeout`` (the
  connection is closed);
* 401: an HMAC or Standard Webhooks signature does not match;
* 400: the body is empty, not JSON, or not UTF-8;
* 415: CloudEvents binary-mode data that is neither JSON nor text;
* 422: not the provider's shape, a template fails, the type is not in the
  catalog, or the data fails its schema (``details`` lists every problem; one
  bad event refuses the whole request);
* 200: every event's id was already accepted (a replay): nothing stored again;
  also a Debezium tombstone, which is ignored;
* 413: an event built from the body would be over the bridge's own limit (the
  inbox would refuse to deliver it);
* 503: the store cannot commit (with ``Retry-After``; the provider retries);
* 202: the events are committed to the inbox.

Authentication is checked before the body is parsed (a signature before it is
even decoded). The limit is enforced while reading, so a missing or lying
Content-Length cannot make the bridge buffer more than the limit; a client that
sends ``Expect: 100-continue`` gets its 413 or 401 before it sends the body. 202
means the events are committed to the store's inbox (the event API's inbox), so
a crash after the answer loses nothing; the inbox then delivers them to handlers.
An unexpected error is answered 422 (while parsing) or 503 (while storing), never
500.

Event attributes: ``type`` from the ``event.type`` template (default
``db/{data.table}.{data.op}`` for supabase and debezium, ``planetscale/{data.event}``
for planetscale; required for json; CloudEvents keep their own); ``id`` from
``event.id``, else the provider's id, else the Standard Webhooks ``webhook-id``,
else a fresh one; ``source`` from ``event.source``, else ``bridge://<name>``;
``time`` from the provider, else now. Templates see ``data`` (the provider's data),
``body`` (the raw JSON), ``header.NAME``, ``meta.provider``, ``meta.webhook_id``
and ``connector``. The correlation id comes from ``event.correlation_id``, else the
CloudEvent's ``correlationid``, else the ``x-correlation-id`` header, else the id;
``traceparent`` from the event or the request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from aiohttp import StreamReader, web
from aiohttp.web_urldispatcher import _default_expect_handler
from pydantic import Field, field_validator, model_validator

from bridge import normalize  # a module reference: bridge.normalize imports bridge.transport
from bridge.errors import InvalidEvent
from bridge.events import Event, event_from_dict, new_id, now_iso
from bridge.templates import DELIVERY_ROOTS, Template, TemplateError, lookup
from bridge.transport import ConnectorConfig, EventMapping, IngressEnv
from connectors.webhook_auth import WebhookAuth, build_verifier
from connectors.webhook_commit import GroupCommit
from connectors.webhook_providers import (
    DEFAULT_TYPES,
    UNREADABLE,
    Candidate,
    Parsed,
    Provider,
    header,
    parser,
)

log = logging.getLogger("bridge.webhook")
_RESERVED = ("/v1/", "/healthz", "/readyz", "/metrics")


class WebhookConfig(ConnectorConfig):
    """Receive webhooks on the bridge's HTTP server and store them as events."""

    type: Literal["webhook"] = "webhook"
    provider: Provider = Field(
        description="What sends the webhooks: supabase, debezium, planetscale, cloudevents, json."
    )
    path: str | None = Field(
        None, description="URL path on the bridge's server. Default: `/hooks/<connector name>`."
    )
    auth: WebhookAuth | None = Field(
        None, description="How requests are authenticated. Without it, anyone may post."
    )
    event: EventMapping = Field(
        default_factory=EventMapping,
        description="Event attribute templates over `data`, `body`, `header.NAME`, `meta.NAME`.",
    )
    max_body_bytes: int | None = Field(
        None, ge=1, description="Larger requests are answered 413. Default: the bridge's limit."
    )
    snapshot: Literal["read", "insert"] = Field(
        "read", description="debezium: report snapshot reads (op r) as `read` or as `insert`."
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith("/") or any(ch in value for ch in "{}?# "):
            raise ValueError("path is an absolute URL path without variables, e.g. /hooks/users")
        if value.startswith(_RESERVED):
            raise ValueError(f"path {value!r} is taken by the bridge's own API")
        return value

    @model_validator(mode="after")
    def _check(self) -> WebhookConfig:
        if self.provider == "json" and not self.event.type:
            raise ValueError("the json provider needs `event.type` (a template)")
        if self.provider == "planetscale" and self.auth is None:
            raise ValueError("planetscale webhooks are signed: set `auth.secret`")
        for name in ("type", "id", "source", "subject"):
            text = getattr(self.event, name)
            if text is not None:
                try:
                    Template(text, DELIVERY_ROOTS)
                except TemplateError as exc:
                    raise ValueError(f"event.{name}: {exc}") from None
        for ref in self.event.correlation_id:
            if ref.replace(":", ".", 1).partition(".")[0] not in ("header", "data", "meta"):
                raise ValueError(f"event.correlation_id: {ref!r}: use header:NAME or data.PATH")
        return self


class _TooLarge(Exception):
    pass


async def read_capped(stream: StreamReader, limit: int) -> bytes:
    """The whole body, or ``_TooLarge`` as soon as more than ``limit`` bytes arrived.

    Never takes more than ``limit + 1`` bytes off the stream (the transport's own
    buffer is bounded by aiohttp's flow control, whatever the body's size).
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(min(65_536, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)


def _answer(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _problem(status: int, message: str, **extra: Any) -> web.Response:
    return _answer(status, {"error": message, **extra})


class WebhookIngress:
    """The route of one webhook connector: check, parse, validate, commit, answer."""

    def __init__(self, cfg: WebhookConfig, name: str, env: IngressEnv) -> None:
        self.cfg = cfg
        self.name = name
        self.env = env
        self._commit = GroupCommit(env.accept)
        self.path = cfg.path or f"/hooks/{name}"
        self.limit = cfg.max_body_bytes or env.max_body_bytes
        self.verify = build_verifier(cfg.auth, cfg.provider)
        self.parse = parser(cfg.provider, snapshot=cfg.snapshot)
        mapping = cfg.event
        type_text = mapping.type or DEFAULT_TYPES[cfg.provider]
        self._type = Template(type_text, DELIVERY_ROOTS) if type_text else None
        self._id = Template(mapping.id, DELIVERY_ROOTS) if mapping.id else None
        self._source = Template(mapping.source, DELIVERY_ROOTS) if mapping.source else None
        self._subject = Template(mapping.subject, DELIVERY_ROOTS) if mapping.subject else None
        self._data_path = mapping.data
        self._correlation = [r.replace(":", ".", 1) for r in mapping.correlation_id]
        self._default_source = f"bridge://{name}"
        if cfg.auth is None:
            log.warning(
                "webhook connector without auth: anyone who reaches the server can post events",
                extra={"connector": name, "path": self.path},
            )

    def routes(self) -> list[web.RouteDef]:
        return [web.post(self.path, self.handle, expect_handler=self._expect)]

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        early = self._precheck(request)
        if early is not None:
            return early
        await _default_expect_handler(request)
        return None

    def _precheck(self, request: web.Request) -> web.Response | None:
        """What headers alone can refuse: a declared size over the limit, a shared secret."""
        declared = request.content_length
        if declared is not None and declared > self.limit:
            return self._reject(
                413, "body_too_large", f"the body is larger than {self.limit} bytes"
            )
        if not self.verify.needs_body and not self.verify(request.headers, b""):
            return self._reject(401, "unauthorized", "authentication failed")
        return None

    def _reject(self, status: int, cause: str, message: str, **extra: Any) -> web.Response:
        log.warning(
            "webhook rejected",
            extra={"connector": self.name, "status": status, "reason": cause},
        )
        response = _problem(status, message, **extra)
        if status in (401, 408, 413):
            response.force_close()  # do not read on a connection that sent what we refused
        return response

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one webhook request (see the module docstring for the statuses)."""
        early = self._precheck(request)
        if early is not None:
            return early
        try:
            body = await read_capped(request.content, self.limit)
        except _TooLarge:
            return self._reject(
                413, "body_too_large", f"the body is larger than {self.limit} bytes"
            )
        except TimeoutError:  # the server's body deadline (server.body_timeout) passed
            return self._reject(408, "body_timeout", "the body did not arrive in time")
        except Exception:  # a broken upload (bad chunking, bad gzip, client gone)
            return self._reject(400, "unreadable_body", "the body could not be read")
        if self.verify.needs_body and not self.verify(request.headers, body):
            return self._reject(401, "unauthorized", "authentication failed")
        headers = normalize.text_headers(request.headers)  # values that JSON can hold
        try:
            parsed: Parsed = self.parse(body, headers)
            events = self.events(parsed.candidates, headers)
        except InvalidEvent as exc:
            return self._invalid(exc)
        except Exception:  # a bug must not become a 500 that the provider retries forever
            log.exception("webhook payload could not be processed", extra={"connector": self.name})
            return self._reject(422, "unprocessable", "the payload could not be processed")
        if not events:
            return _answer(200, {"ids": [], "ignored": parsed.ignored or "empty"})
        # Header values become attributes too (correlation id, traceparent, templates).
        grown = len(body) + sum(len(v) for v in headers.values())
        if grown > self.env.max_body_bytes // 2:
            largest = max(len(e.to_json()) for e in events)
            if largest > self.env.max_body_bytes:
                return self._reject(
                    413,
                    "event_too_large",
                    f"an event would be larger than {self.env.max_body_bytes} bytes",
                )
        try:
            fresh = await self._commit.accept(events)
        except Exception as exc:  # StoreError or worse: nothing was accepted, let the sender retry
            log.error(
                "webhook not stored: the store is unavailable",
                extra={"connector": self.name, "error": str(exc)},
            )
            response = _problem(503, "the store is unavailable; nothing was accepted, try again")
            response.headers["Retry-After"] = "1"
            return response
        accepted = [e.id for e, new in zip(events, fresh, strict=True) if new]
        duplicates = [e.id for e, new in zip(events, fresh, strict=True) if not new]
        answer = {"ids": [e.id for e in events], "accepted": accepted, "duplicates": duplicates}
        return _answer(202 if accepted else 200, answer)

    def _invalid(self, exc: InvalidEvent) -> web.Response:
        if exc.reason in UNREADABLE:
            return self._reject(400, exc.reason, str(exc))
        if exc.reason == "unsupported_data":
            return self._reject(415, exc.reason, str(exc.detail))
        details = exc.detail if isinstance(exc.detail, list) else [exc.detail]
        return self._reject(
            422,
            exc.reason,
            "invalid event; nothing was accepted",
            reason=exc.reason,
            details=details,
        )

    # ------------------------------------------------------------------ events

    def events(self, candidates: list[Candidate], headers: Mapping[str, str]) -> list[Event[Any]]:
        """Validated events for the candidates of one request.

        Raises:
            InvalidEvent: reason ``invalid_events``; ``detail`` lists each failing
                candidate's index, type and error (template, unknown type, schema).
        """
        webhook_id = header(headers, "webhook-id")
        meta = {"provider": self.cfg.provider, "webhook_id": webhook_id}
        traceparent = header(headers, "traceparent")
        tracestate = header(headers, "tracestate") if traceparent else None
        correlation = header(headers, "x-correlation-id")
        single = len(candidates) == 1
        events: list[Event[Any]] = []
        errors: list[dict[str, Any]] = []
        for index, candidate in enumerate(candidates):
            raw: dict[str, Any] = {}
            try:
                if candidate.attrs is not None:
                    raw, data = dict(candidate.attrs), candidate.data
                else:
                    fallback = webhook_id
                    if webhook_id is not None and not single:
                        fallback = f"{webhook_id}-{index}"
                    raw, data = self._mapped(candidate, headers, meta, fallback)
                schema = self.env.catalog.resolve(raw["type"])
                if schema is None:
                    raise InvalidEvent("unknown_type", "the event type is not in the catalog")
                valid = schema.validate(data)
                raw.setdefault("time", candidate.time or now_iso())
                events.append(
                    event_from_dict(
                        raw,
                        valid,
                        source=self._default_source,
                        correlationid=normalize.correlation_id(
                            self._correlation, raw, data, headers, meta, correlation
                        ),
                        traceparent=raw.get("traceparent") or traceparent,
                        tracestate=raw.get("tracestate") or tracestate,
                    )
                )
            except InvalidEvent as exc:
                error = {"index": index, "type": raw.get("type"), "error": exc.reason}
                if exc.detail is not None:
                    error["details"] = exc.detail
                errors.append(error)
        if errors:
            raise InvalidEvent("invalid_events", errors)
        return events

    def _mapped(
        self,
        candidate: Candidate,
        headers: Mapping[str, str],
        meta: Mapping[str, Any],
        webhook_id: str | None,
    ) -> tuple[dict[str, Any], Any]:
        if self._type is None:  # excluded by the config model; kept for direct construction
            raise InvalidEvent("mapping", "the connector has no event.type template")
        scope = {
            "data": candidate.data,
            "body": candidate.body,
            "header": headers,
            "headers": headers,
            "meta": meta,
            "connector": self.name,
        }
        try:
            event_type = self._type.render_str(scope)
            if self._id is not None:
                event_id = self._id.render_str(scope)
            else:
                event_id = candidate.native_id or webhook_id or new_id()
            raw: dict[str, Any] = {
                "specversion": "1.0",
                "id": event_id,
                "type": event_type,
                "source": self._source.render_str(scope) if self._source else self._default_source,
            }
            if self._subject is not None:
                raw["subject"] = self._subject.render_str(scope)
            data = candidate.data
            if self._data_path:
                data = lookup({"data": data}, f"data.{self._data_path}")
        except (TemplateError, KeyError, TypeError) as exc:
            raise InvalidEvent("mapping", f"event mapping failed: {exc}") from None
        if not event_type:
            raise InvalidEvent("mapping", "the event type template rendered an empty string")
        if not event_id:
            raise InvalidEvent("mapping", "the event id template rendered an empty string")
        return raw, data


def ingress(cfg: WebhookConfig, name: str, env: IngressEnv) -> WebhookIngress:
    """The ``ConnectorKind.ingress`` factory."""
    return WebhookIngress(cfg, name, env)
