"""``WebhookIngress``: the route of one webhook connector (see ``connectors.webhook``).

It checks a request (size, authentication), reads it within the limit, parses it
with the provider's parser, builds and validates the events, commits them to the
inbox and answers with the statuses the package docstring lists.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.web_urldispatcher import _default_expect_handler

from bridge import (
    jsonio,
    normalize,  # a module reference: bridge.normalize imports bridge.transport
)
from bridge.errors import InvalidEvent
from bridge.events import Event, event_from_dict, new_id, now_iso
from bridge.formats import Candidate, Parsed
from bridge.templates import DELIVERY_ROOTS, Template, TemplateError, lookup
from bridge.transport import IngressEnv
from connectors.webhook.auth import build_verifier
from connectors.webhook.commit import GroupCommit
from connectors.webhook.config import WebhookConfig
from connectors.webhook.providers import DEFAULT_TYPES, UNREADABLE, header, parser

log = logging.getLogger("bridge.webhook")


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
    return web.Response(body=jsonio.dumps(body), status=status, content_type="application/json")


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
        self.parse = parser(cfg.provider, snapshot=cfg.snapshot, tombstones=cfg.tombstones)
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
        """One POST route on ``path`` (``Expect: 100-continue`` gets an early refusal)."""
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
        if status not in (401, 408):  # what the sender sent, not who or how fast
            self.env.refused(cause)
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
        traceparent, tracestate, baggage = normalize.trace_headers(headers)
        correlation = header(headers, "x-correlation-id")
        single = len(candidates) == 1
        events: list[Event[Any]] = []
        errors: list[dict[str, Any]] = []
        for index, candidate in enumerate(candidates):
            raw: dict[str, Any] = {}
            try:
                fallback = webhook_id
                if webhook_id is not None and not single:
                    fallback = f"{webhook_id}-{index}"
                if candidate.attrs is not None:
                    raw, data = dict(candidate.attrs), candidate.data
                elif candidate.type is not None:
                    raw, data = self._fixed(candidate, headers, meta, fallback)
                else:
                    raw, data = self._mapped(candidate, headers, meta, fallback)
                schema = self.env.catalog.resolve(raw["type"])
                if schema is not None:
                    valid = schema.validate(data)
                elif candidate.type is not None:
                    # A record kind of its own (a Debezium heartbeat ...) is never refused:
                    # stored, it follows `unrouted` like any event no handler takes.
                    valid = data
                else:
                    raise InvalidEvent("unknown_type", "the event type is not in the catalog")
                made = None  # a time of our own making needs no check: passed beside raw
                if "time" not in raw:
                    if candidate.time:
                        raw["time"] = candidate.time
                    else:
                        made = now_iso()
                if baggage and not raw.get("traceparent"):
                    raw.setdefault("baggage", baggage)
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
                        time=made,
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

    def _fixed(
        self,
        candidate: Candidate,
        headers: Mapping[str, str],
        meta: Mapping[str, Any],
        webhook_id: str | None,
    ) -> tuple[dict[str, Any], Any]:
        """A candidate with a type of its own: the ``event:`` templates, written for row
        changes, do not apply (a heartbeat has no table); ``source`` does if it renders."""
        source = self._default_source
        if self._source is not None:
            scope = {"data": candidate.data, "body": candidate.body, "header": headers}
            scope |= {"headers": headers, "meta": meta, "connector": self.name}
            # A template over row fields does not render here: the default source.
            with contextlib.suppress(TemplateError, KeyError, TypeError):
                source = self._source.render_str(scope) or source
        event_id = candidate.native_id or webhook_id or candidate.content_id or new_id()
        raw = {"specversion": "1.0", "id": event_id, "type": candidate.type, "source": source}
        return raw, candidate.data

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
                event_id = candidate.native_id or webhook_id or candidate.content_id or new_id()
            raw: dict[str, Any] = {
                "id": event_id,
                "type": event_type,
                "source": self._source.render_str(scope) if self._source else self._default_source,
            }
            if self._subject is not None:
                raw["subject"] = self._subject.render_str(scope) or None  # empty: no subject
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
