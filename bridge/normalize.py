"""Delivery -> Event.

In order: the size limit; CloudEvents binary mode (``ce-``/``ce_``/
``cloudEvents:``/``cloudEvents_`` headers; ``ce-`` values are percent-decoded as
the HTTP binding writes them, except on AMQP whose SDK binding writes them raw;
the data is JSON for a JSON content type or none, text for ``text/*``, XML or a
charset, else bytes: see ``binary_data``); JSON decoding (one pass, with
orjson); structured CloudEvents (recognized by ``specversion``, ``id`` and
``type`` in the body; ``data_base64`` gives bytes); otherwise the connector's
``event:`` mapping. W3C ``traceparent``, ``tracestate`` and ``baggage`` headers
go with the event (``baggage`` as the extension of that name). Then the
catalog validates ``data`` for the type, and the correlation id is fixed:
configured headers/fields, else the inbound ``correlationid``, else the event id.

Before all that, ``consume.format`` (``bridge.formats``): ``debezium`` and
``supabase`` read the body with their format; ``cloudevents`` refuses a message
that is not a CloudEvent (``not_cloudevent``); ``json`` is the order above. A
Kafka tombstone (``meta["tombstone"]``) is dropped (``Skipped``) or becomes a
``db/tombstone`` event, per ``consume.tombstones``, whatever the format.

Every failure raises ``InvalidEvent`` with a short reason; the dispatcher turns it
into a dead letter and settles the message, so bad input never blocks a source.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

import bridge.jsonio as jsonio
from bridge.attributes import is_json_type, is_text_type, structured_data
from bridge.errors import InvalidEvent
from bridge.events import EMPTY, Event, EventCatalog, event_from_dict
from bridge.formats import Tombstones, format_for
from bridge.formats.reading import FormatReader, tombstone_record
from bridge.templates import DELIVERY_ROOTS, Template, TemplateError, lookup
from bridge.transport import Delivery, EventMapping, TransportMeta

_CE_PREFIXES = ("ce-", "ce_", "cloudevents:", "cloudevents_")
_CASELESS = (CIMultiDict, CIMultiDictProxy)


def decode_json(body: bytes) -> Any:
    """Parse JSON bytes.

    Raises:
        InvalidEvent: ``invalid_utf8`` or ``malformed_json``, with the position;
            ``too_deep`` when nested deeper than ``MAX_JSON_DEPTH``.
    """
    try:
        value = jsonio.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise InvalidEvent("invalid_utf8", f"body is not UTF-8 at byte {uexc.start}") from None
        raise InvalidEvent("malformed_json", str(exc)) from None
    if (
        len(body) > MAX_JSON_DEPTH  # a shorter body cannot nest that deep
        and body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH
        and _too_deep(value)
    ):
        raise InvalidEvent("too_deep", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


# orjson reads JSON nested up to 1,024 levels but writes at most 254: an event whose
# data is deeper could never be stored (inbox, dead letter). Reading refuses it.
MAX_JSON_DEPTH = 200
_HEADROOM = 254 - MAX_JSON_DEPTH


def _too_deep(value: Any) -> bool:
    """Nested deeper than ``MAX_JSON_DEPTH`` (orjson, at C speed, with the headroom
    that an event envelope and a dead letter add around the data)."""
    for _ in range(_HEADROOM):
        value = [value]
    try:
        jsonio.dumps(value)
    except orjson.JSONEncodeError:
        return True
    return False


def text_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` with every value valid UTF-8 text.

    HTTP servers and broker clients decode header bytes that are not UTF-8 with
    ``surrogateescape``; such a value cannot be written as JSON, so each one is
    decoded again with U+FFFD in place of the bad bytes. Returns ``headers``
    itself when every value is fine (the common case: no copy).
    """
    bad = False
    for value in headers.values():
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                bad = True
                break
    if not bad:
        return headers
    clean: CIMultiDict[str] = CIMultiDict()
    for key, value in headers.items():
        fixed = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        clean.add(key, fixed.encode("utf-8", "replace").decode("utf-8"))
    return clean


def binary_attributes(
    headers: Mapping[str, str], *, required: str = "specversion", percent: bool = True
) -> dict[str, str] | None:
    """CloudEvents attributes from binary-mode headers, or None when ``required`` is absent.

    With ``percent``, ``ce-`` values are percent-decoded (UTF-8), as the HTTP
    binding requires (spec 3.1.3.2); other prefixes are taken as they are.
    """
    attrs: dict[str, str] | None = None
    for key, value in headers.items():
        lowered = key.lower()
        if not lowered.startswith(_CE_PREFIXES):  # most headers: one test, not four
            continue
        for prefix in _CE_PREFIXES:
            if lowered.startswith(prefix):
                if attrs is None:
                    attrs = {}
                if percent and prefix == "ce-" and "%" in value:
                    value = unquote(value, errors="replace")
                attrs[lowered[len(prefix) :]] = value
                break
    if attrs is None or required not in attrs:
        return None
    return attrs


def binary_data(body: bytes, content_type: str | None) -> Any:
    """The data of a binary-mode message, never refused for its content type.

    Empty: None. JSON content type (or none): decoded JSON. Text (``text/*``,
    XML, form data, a ``charset``): ``str`` when it is UTF-8, else the bytes.
    Anything else: the bytes as they are.

    Raises:
        InvalidEvent: a JSON content type whose body is not JSON (``malformed_json``...).
    """
    if not body:
        return None
    if is_json_type(content_type):
        return decode_json(body)
    if is_text_type(content_type):
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return body
    return body


def trace_headers(headers: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """(traceparent, tracestate, baggage) from W3C headers; the last two only with the first."""
    traceparent = header(headers, "traceparent")
    if not traceparent:
        return None, None, None
    return traceparent, header(headers, "tracestate"), header(headers, "baggage")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name."""
    value = headers.get(name)
    if value is not None or isinstance(headers, _CASELESS):
        return value  # aiohttp's headers match case-insensitively already
    lowered = name.lower()
    for key, val in headers.items():
        if key.lower() == lowered:
            return val
    return None


def is_structured(value: Any) -> bool:
    """True when a decoded body is a structured-mode CloudEvent."""
    return isinstance(value, dict) and "specversion" in value and "type" in value and "id" in value


class Normalizer:
    """Turns one connector's deliveries into events.

    Args:
        connector: the connector's name (the event source default is ``bridge://<connector>``).
        transport: attribute prefix for metadata (``kafka``, ``amqp``, ``sqs``, ``http``).
        mapping: the connector's ``event:`` mapping.
        catalog: the event catalog.
        max_body_bytes: larger bodies are rejected.
    """

    def __init__(
        self,
        connector: str,
        transport: str,
        mapping: EventMapping,
        catalog: EventCatalog,
        max_body_bytes: int,
        *,
        payload_format: str = "json",
        tombstones: Tombstones = "drop",
        snapshot: str = "read",
    ) -> None:
        self.connector = connector
        self.transport = transport
        self.catalog = catalog
        self.max_body_bytes = max_body_bytes
        self._default_source = f"bridge://{connector}"
        self._type = Template(mapping.type, DELIVERY_ROOTS) if mapping.type else None
        self._source = Template(mapping.source, DELIVERY_ROOTS) if mapping.source else None
        self._id = Template(mapping.id, DELIVERY_ROOTS) if mapping.id else None
        self._subject = Template(mapping.subject, DELIVERY_ROOTS) if mapping.subject else None
        self._data_path = mapping.data
        # Static templates (the usual ``type: orders/created``) need no scope per message.
        self._needs_scope = any(
            t is not None and not t.is_static
            for t in (self._type, self._source, self._id, self._subject)
        )
        self._correlation = [_ref(r) for r in mapping.correlation_id]
        self._prefix = f"{transport}."
        # consume.format / tombstones (bridge.formats): a format of its own reads the body.
        found = format_for(payload_format, snapshot=snapshot, tombstones=tombstones)
        self._reader = FormatReader(found, mapping, connector, decode_json) if found else None
        self._only_cloudevents = payload_format == "cloudevents"
        self._tombstones = tombstones

    def __call__(self, delivery: Delivery) -> Event[Any]:
        """Normalize one delivery.

        Raises:
            InvalidEvent: too large, undecodable, not a valid event, unknown type, schema failure;
                or the reason the transport put in ``meta["reject_reason"]``.
        """
        body = delivery.body
        meta = delivery.meta
        if meta and "reject_reason" in meta:  # the transport gave up on it (delivery limit)
            raise InvalidEvent(str(meta["reject_reason"]), meta.get("reject_detail"))
        if len(body) > self.max_body_bytes:
            raise InvalidEvent("too_large", f"{len(body)} bytes, limit {self.max_body_bytes}")
        built = delivery.event
        if (
            built is not None
            and self._reader is None
            and not self._correlation
            and self.catalog.resolve(built.type) is not None
        ):
            # Built from this very body, its data validated by this catalog, in this process
            # (the inbox's hand-over): what decoding it again would give, with this
            # delivery's transport metadata.
            return with_transport(built, self._transport(meta))
        headers = text_headers(delivery.headers) if delivery.headers else delivery.headers
        if headers is not delivery.headers:  # rare: a header that is not UTF-8
            delivery = dataclasses.replace(delivery, headers=headers)
        attrs = binary_attributes(headers, percent=self.transport != "amqp") if headers else None
        raw: dict[str, Any]
        if (meta and meta.get("tombstone")) or self._reader is not None:
            raw, data = self._formatted(delivery, headers)
        elif attrs is not None:
            raw = attrs
            data = self._binary_data(attrs, body, headers)
            raw.setdefault("id", self._stable_id(meta))
        else:
            payload = decode_json(body)
            if is_structured(payload):
                raw = payload
                data = structured_data(payload)
            else:
                raw, data = self._mapped(payload, delivery)
        event_type = raw.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise InvalidEvent("invalid_cloudevent", "attribute 'type' must be a non-empty string")
        schema = self.catalog.resolve(event_type)
        if schema is None:
            raise InvalidEvent("unknown_type", f"event type {event_type!r} is not in the catalog")
        valid = schema.validate(data)
        traceparent = tracestate = None
        if headers and "traceparent" not in raw:
            traceparent, tracestate, baggage = trace_headers(headers)
            if baggage and "baggage" not in raw:
                raw = {**raw, "baggage": baggage}
        return event_from_dict(
            raw,
            valid,
            source=self._default_source,
            transport=self._transport(meta),
            correlationid=self._correlation_id(raw, data, delivery),
            traceparent=traceparent,
            tracestate=tracestate,
        )

    def _transport(self, meta: Mapping[str, Any]) -> Mapping[str, Any]:
        if not meta:
            return EMPTY
        return TransportMeta(meta, self._prefix)

    def _binary_data(self, attrs: dict[str, str], body: bytes, headers: Mapping[str, str]) -> Any:
        content_type = attrs.get("datacontenttype") or header(headers, "content-type") or ""
        if content_type:
            attrs["datacontenttype"] = content_type
        return binary_data(body, content_type)

    def _formatted(
        self, delivery: Delivery, headers: Mapping[str, str]
    ) -> tuple[dict[str, Any], Any]:
        """A tombstone (a Kafka record with a null value), or a body in ``consume.format``.

        Raises:
            Skipped: a tombstone under ``tombstones: drop``.
            InvalidEvent: not the format's shape, or a mapping failure.
        """
        meta = delivery.meta
        if meta.get("tombstone"):
            candidate = tombstone_record(meta, self._tombstones)
        elif self._reader is not None:
            candidate = self._reader.candidate(delivery.body, headers)
        else:  # pragma: no cover - excluded by the caller
            raise InvalidEvent("no_format", "no payload format")
        if self._reader is None:
            raw = {"type": candidate.type, "id": self._stable_id(meta)}
            return raw, candidate.data
        return self._reader.attributes(candidate, headers, meta)

    def _mapped(self, payload: Any, delivery: Delivery) -> tuple[dict[str, Any], Any]:
        if self._only_cloudevents:
            raise InvalidEvent(
                "not_cloudevent",
                "consume.format is cloudevents: the message has no ce- headers and its body "
                "is not a structured CloudEvent (specversion, id, type)",
            )
        if self._type is None:
            raise InvalidEvent(
                "no_type",
                "the message is not a CloudEvent and the connector's event mapping has no type",
            )
        scope: Mapping[str, Any] = (
            {
                "data": payload,
                "header": delivery.headers,
                "headers": delivery.headers,
                "meta": delivery.meta,
                "connector": self.connector,
            }
            if self._needs_scope
            else EMPTY
        )
        try:
            raw: dict[str, Any] = {
                "type": self._type.render_str(scope),
                "id": self._id.render_str(scope) if self._id else self._stable_id(delivery.meta),
                "source": self._source.render_str(scope) if self._source else self._default_source,
            }
            if self._subject is not None:
                raw["subject"] = self._subject.render_str(scope) or None  # empty: no subject
            data = payload
            if self._data_path:
                data = lookup({"data": payload}, f"data.{self._data_path}")
        except (TemplateError, KeyError) as exc:
            raise InvalidEvent("mapping", f"event mapping failed: {exc}") from None
        if not raw["type"]:
            raise InvalidEvent("mapping", "the event type template rendered an empty string")
        return raw, data

    def _stable_id(self, meta: Mapping[str, Any]) -> str:
        message_id = meta.get("message_id") if meta else None
        return str(message_id) if message_id is not None else str(uuid.uuid4())

    def _correlation_id(self, raw: Mapping[str, Any], data: Any, delivery: Delivery) -> str:
        return correlation_id(self._correlation, raw, data, delivery.headers, delivery.meta)


def correlation_id(
    refs: Sequence[str],
    raw: Mapping[str, Any],
    data: Any,
    headers: Mapping[str, str],
    meta: Mapping[str, Any],
    inbound: str | None = None,
) -> str:
    """The correlation id of an event (DESIGN §7).

    The first of ``refs`` (``header.NAME``, ``data.PATH``, ``meta.NAME``) that has a
    value, else the inbound ``correlationid`` (or ``inbound``), else the event id.
    """
    if refs:
        scope = {"header": headers, "meta": meta, "data": data}
        for path in refs:
            try:
                value = lookup(scope, path)
            except (KeyError, TypeError):
                continue
            if value not in (None, ""):
                return str(value)
    found = raw.get("correlationid") or inbound
    return str(found) if found else str(raw.get("id") or "")


def _ref(ref: str) -> str:
    """``header:x-id`` -> ``header.x-id``; ``data.a.b`` and ``meta.k`` unchanged."""
    root, sep, rest = ref.partition(":")
    return f"{root}.{rest}" if sep and root in ("header", "meta", "data") else ref


def with_transport(event: Event[Any], transport: Mapping[str, Any]) -> Event[Any]:
    """``dataclasses.replace(event, transport=transport)`` at half the cost (every delivery
    of the inbox's hand-over makes one): the fields in their order, transport last."""
    e = event
    return Event(e.id, e.source, e.type, e.data, e.specversion, e.time, e.subject,
                 e.datacontenttype, e.dataschema, e.correlationid, e.traceparent,
                 e.tracestate, e.parentid, e.extensions, transport)  # fmt: skip
