"""What each webhook provider sends, and how it becomes candidate events.

A parser takes the raw body and headers of one request and returns ``Parsed``:
the candidate events it holds (data, provider id, time), or a reason to ignore
the request (a Debezium tombstone). It raises ``InvalidEvent``: reasons
``empty_body``, ``malformed_json`` and ``invalid_utf8`` mean the request could
not be read (400); every other reason means well-formed JSON that is not what
the provider sends (422), with the problems in ``detail``. CloudEvents data of
any content type is kept: JSON, text (``str``) or bytes (binary mode, or
``data_base64``), as ``bridge.normalize.binary_data`` reads it.

The database providers, ``supabase`` and ``debezium``, are the payload formats of
``bridge.formats`` (the same ones ``consume.format`` gives Kafka, RabbitMQ and SQS):
their data shape, record kinds, event types and ids are described there. A
Debezium tombstone (an empty body, ``null``, or ``{"schema": ..., "payload":
null}``) is ignored (200) under ``tombstones: drop``, the default.

Event ids (so that a provider's retry of the same change is recognised):

* debezium: ``dbz-`` + a SHA-256 of the record (see ``bridge.formats.debezium``).
* supabase: the Standard Webhooks ``webhook-id`` when there is one, else
  ``supabase-`` + a SHA-256 of schema, table, type, record and old_record (see
  ``bridge.formats.supabase``). A custom ``event.id`` template must render for
  all three types: a DELETE has no ``record`` (``record: null``), so write
  ``{data.old_record.id|default:}`` style fields or the DELETE is refused.
* planetscale: ``planetscale:<event>:<resource.id>:<timestamp>``.
* cloudevents: the event's own ``id``.
* json: none of its own: the ``webhook-id`` when there is one, else a fresh id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from multidict import CIMultiDict, CIMultiDictProxy

from bridge import normalize  # a module reference: bridge.normalize imports bridge.transport
from bridge.attributes import structured_data
from bridge.errors import InvalidEvent
from bridge.formats import Candidate, DebeziumFormat, Parsed, SupabaseFormat, Tombstones
from bridge.formats.candidates import iso_from_epoch

Provider = Literal["supabase", "debezium", "planetscale", "cloudevents", "json"]
PROVIDERS: tuple[str, ...] = ("supabase", "debezium", "planetscale", "cloudevents", "json")

DEFAULT_TYPES: Mapping[str, str | None] = {
    "supabase": "db/{data.table}.{data.op}",
    "debezium": "db/{data.table}.{data.op}",
    "planetscale": "planetscale/{data.event}",
    "cloudevents": None,
    "json": None,
}

__all__ = [  # Candidate and Parsed live in bridge.formats; re-exported for the parsers' users
    "DEFAULT_TYPES",
    "PROVIDERS",
    "UNREADABLE",
    "Candidate",
    "Parsed",
    "Parser",
    "Provider",
    "header",
    "parser",
]

# Reasons that mean "the request could not be read" rather than "not a valid event".
UNREADABLE = frozenset({"empty_body", "malformed_json", "invalid_utf8", "too_deep"})


Parser = Callable[[bytes, Mapping[str, str]], Parsed]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by lower-case ``name``: aiohttp's headers match case-insensitively already,
    other mappings are searched."""
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        return headers.get(name)
    return normalize.header(headers, name)


def parser(provider: str, *, snapshot: str = "read", tombstones: Tombstones = "drop") -> Parser:
    """The parser of ``provider``; ``snapshot`` is Debezium's name for snapshot reads,
    ``tombstones`` what becomes of a Debezium tombstone (``drop`` or ``event``)."""
    if provider == "supabase":
        return _supabase(SupabaseFormat())
    if provider == "debezium":
        return _debezium(DebeziumFormat(snapshot=snapshot, tombstones=tombstones))
    if provider == "planetscale":
        return _planetscale
    if provider == "cloudevents":
        return _cloudevents
    if provider == "json":
        return _json
    raise ValueError(f"unknown provider {provider!r}")


def _decode(body: bytes) -> Any:
    if not body.strip():
        raise InvalidEvent("empty_body", "the request has no body")
    return normalize.decode_json(body)


# --------------------------------------------------------------------------- supabase, debezium


def _supabase(fmt: SupabaseFormat) -> Parser:
    return lambda body, headers: fmt.parse(_decode(body), headers)


def _debezium(fmt: DebeziumFormat) -> Parser:
    def parse(body: bytes, headers: Mapping[str, str]) -> Parsed:
        value = normalize.decode_json(body) if body.strip() else None  # empty: a tombstone
        return fmt.parse(value, headers)

    return parse


# --------------------------------------------------------------------------- planetscale


def _planetscale(body: bytes, headers: Mapping[str, str]) -> Parsed:
    payload = _decode(body)
    if not isinstance(payload, dict):
        raise InvalidEvent("not_planetscale", ["expected an object {timestamp, event, resource}"])
    problems: list[str] = []
    event = payload.get("event")
    if not isinstance(event, str) or not event:
        problems.append("event must be a non-empty string")
    timestamp = payload.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        problems.append("timestamp must be an integer (Unix time)")
    resource = payload.get("resource")
    if resource is not None and not isinstance(resource, dict):
        problems.append("resource must be an object")
    if problems:
        raise InvalidEvent("not_planetscale", problems)
    resource_id = resource.get("id") if isinstance(resource, dict) else None
    if resource_id is not None:
        native = f"planetscale:{event}:{resource_id}:{timestamp}"
    else:
        native = "planetscale:" + hashlib.sha256(body).hexdigest()[:40]
    return Parsed([Candidate(payload, payload, native, iso_from_epoch(timestamp))])


# --------------------------------------------------------------------------- cloudevents

_REQUIRED = ("id", "source", "type")


def _cloudevents(body: bytes, headers: Mapping[str, str]) -> Parsed:
    attrs = normalize.binary_attributes(headers)
    if attrs is not None:
        return Parsed([_binary(attrs, body, headers)])
    payload = _decode(body)
    content_type = (header(headers, "content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/cloudevents-batch+json" or isinstance(payload, list):
        if not isinstance(payload, list):
            raise InvalidEvent("not_cloudevent", ["a batch is a JSON array of CloudEvents"])
        if not payload:
            raise InvalidEvent("empty_batch", ["the batch holds no events"])
        return Parsed([_structured(item, f"[{i}] ") for i, item in enumerate(payload)])
    return Parsed([_structured(payload, "")])


def _check_attributes(attrs: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    if attrs.get("specversion") != "1.0":
        problems.append(f"{where}specversion must be '1.0'")
    for name in _REQUIRED:
        value = attrs.get(name)
        if not isinstance(value, str) or not value:
            problems.append(f"{where}{name} must be a non-empty string")
    return problems


def _structured(item: Any, where: str) -> Candidate:
    if not isinstance(item, dict):
        raise InvalidEvent(
            "not_cloudevent",
            [f"{where}expected a CloudEvent object (structured mode) or ce- headers (binary)"],
        )
    problems = _check_attributes(item, where)
    if problems:
        raise InvalidEvent("not_cloudevent", problems)
    attrs = {k: v for k, v in item.items() if k not in ("data", "data_base64")}
    try:
        data = structured_data(item)
    except InvalidEvent as exc:
        raise InvalidEvent("not_cloudevent", [f"{where}{exc.detail}"]) from None
    return Candidate(data, item, native_id=item["id"], time=_opt_str(item.get("time")), attrs=attrs)


def _binary(attrs: dict[str, Any], body: bytes, headers: Mapping[str, str]) -> Candidate:
    problems = _check_attributes(attrs, "ce-")
    if problems:
        raise InvalidEvent("not_cloudevent", problems)
    content_type = attrs.get("datacontenttype") or header(headers, "content-type") or ""
    if content_type:
        attrs["datacontenttype"] = content_type
    data = normalize.binary_data(body, content_type)
    body_root = data if not isinstance(data, bytes) else None  # templates read JSON or text
    return Candidate(data, body_root, native_id=attrs["id"], time=attrs.get("time"), attrs=attrs)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------- json


def _json(body: bytes, headers: Mapping[str, str]) -> Parsed:
    payload = _decode(body)
    return Parsed([Candidate(payload, payload)])
