"""What each webhook provider sends, and how it becomes candidate events.

A parser takes the raw body and headers of one request and returns ``Parsed``:
the candidate events it holds (data, provider id, time), or a reason to ignore
the request (a Debezium tombstone). It raises ``InvalidEvent``: reasons
``empty_body``, ``malformed_json`` and ``invalid_utf8`` mean the request could
not be read (400); every other reason means well-formed JSON that is not what
the provider sends (422), with the problems in ``detail``. CloudEvents data of
any content type is kept: JSON, text (``str``) or bytes (binary mode, or
``data_base64``), as ``bridge.normalize.binary_data`` reads it.

Database providers share one data shape, a superset of Supabase's payload, so a
handler of ``db/*`` events reads Supabase and Debezium changes alike::

    {"type": "INSERT", "op": "insert", "table": "users", "schema": "public",
     "record": {...} | null, "old_record": {...} | null, ...}

``op`` is ``insert``, ``update``, ``delete``, ``read`` (a Debezium snapshot read;
``snapshot: insert`` reports those as inserts) or ``truncate``; ``type`` is the
same in capitals. Debezium adds ``database``, ``source`` (its source block: lsn,
ts_ms, ...), ``ts_ms`` and ``transaction`` when present.

Event ids (so that a provider's retry of the same change is recognised):

* debezium: ``dbz-`` + SHA-256 of the change's ``source`` block, ``op``,
  ``before`` and ``after``. The source block pins the change's position in the
  log (Postgres ``lsn``, MySQL ``file``/``pos``/``row``, ...); the row images
  tell apart snapshot reads, which share one position.
* planetscale: ``planetscale:<event>:<resource.id>:<timestamp>``.
* cloudevents: the event's own ``id``.
* supabase, json: none of their own. Supabase's database webhooks carry no change
  id and are sent once, and two identical payloads may be two real changes (a
  row deleted and inserted again), so a content hash would lose one of them. The
  connector uses the Standard Webhooks ``webhook-id`` when there is one, else a
  fresh id; set ``event.id`` (e.g. ``"{data.record.id}-{data.record.updated_at}"``)
  to deduplicate on your own key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from bridge import normalize  # a module reference: bridge.normalize imports bridge.transport
from bridge.attributes import structured_data
from bridge.errors import InvalidEvent

Provider = Literal["supabase", "debezium", "planetscale", "cloudevents", "json"]
PROVIDERS: tuple[str, ...] = ("supabase", "debezium", "planetscale", "cloudevents", "json")

DEFAULT_TYPES: Mapping[str, str | None] = {
    "supabase": "db/{data.table}.{data.op}",
    "debezium": "db/{data.table}.{data.op}",
    "planetscale": "planetscale/{data.event}",
    "cloudevents": None,
    "json": None,
}

# Reasons that mean "the request could not be read" rather than "not a valid event".
UNREADABLE = frozenset({"empty_body", "malformed_json", "invalid_utf8", "too_deep"})


@dataclass(slots=True)
class Candidate:
    """One event a request holds, before the connector's mapping and the catalog.

    Attributes:
        data: the event data (template root ``data``).
        body: the raw JSON item it came from (template root ``body``).
        native_id: the provider's stable id for it, if it has one.
        time: when it happened (RFC 3339), if the provider says.
        attrs: CloudEvents only: the event's own attributes (id, source, type ...).
    """

    data: Any
    body: Any
    native_id: str | None = None
    time: str | None = None
    attrs: dict[str, Any] | None = None


@dataclass(slots=True)
class Parsed:
    """The candidates of one request; ``ignored`` says why a request holds none."""

    candidates: list[Candidate] = field(default_factory=list)
    ignored: str | None = None


Parser = Callable[[bytes, Mapping[str, str]], Parsed]


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by lower-case ``name``: aiohttp's headers match case-insensitively already,
    other mappings are searched."""
    if isinstance(headers, CIMultiDictProxy | CIMultiDict):
        return headers.get(name)
    return normalize.header(headers, name)


def parser(provider: str, *, snapshot: str = "read") -> Parser:
    """The parser of ``provider``; ``snapshot`` is Debezium's name for snapshot reads."""
    if provider == "supabase":
        return _supabase
    if provider == "debezium":
        return lambda body, headers: _debezium(body, snapshot)
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


def _iso_from_epoch(value: Any, scale: float = 1.0) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        moment = datetime.fromtimestamp(value / scale, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat().replace("+00:00", "Z")


def _object_or_null(change: Mapping[str, Any], name: str, problems: list[str]) -> Any:
    value = change.get(name)
    if value is not None and not isinstance(value, dict):
        problems.append(f"{name} must be an object or null")
        return None
    return value


# --------------------------------------------------------------------------- supabase

_SUPABASE_OPS = {"INSERT": "insert", "UPDATE": "update", "DELETE": "delete"}


def _supabase(body: bytes, headers: Mapping[str, str]) -> Parsed:
    payload = _decode(body)
    if not isinstance(payload, dict):
        raise InvalidEvent(
            "not_supabase", ["expected an object {type, table, schema, record, old_record}"]
        )
    problems: list[str] = []
    kind = payload.get("type")
    op = _SUPABASE_OPS.get(kind) if isinstance(kind, str) else None
    if op is None:
        problems.append("type must be INSERT, UPDATE or DELETE")
    for name in ("table", "schema"):
        value = payload.get(name)
        if not isinstance(value, str) or not value:
            problems.append(f"{name} must be a non-empty string")
    record = _object_or_null(payload, "record", problems)
    old_record = _object_or_null(payload, "old_record", problems)
    if op in ("insert", "update") and record is None:
        problems.append(f"record must be an object for {kind}")
    if op == "delete" and old_record is None:
        problems.append("old_record must be an object for DELETE")
    if problems:
        raise InvalidEvent("not_supabase", problems)
    return Parsed([Candidate({**payload, "op": op}, payload)])


# --------------------------------------------------------------------------- debezium

_DEBEZIUM_OPS = {"c": "insert", "u": "update", "d": "delete", "r": "read", "t": "truncate"}


def _debezium(body: bytes, snapshot: str) -> Parsed:
    if not body.strip():
        return Parsed(ignored="tombstone")
    payload = normalize.decode_json(body)
    items = payload if isinstance(payload, list) else [payload]
    candidates = []
    for index, item in enumerate(items):
        if isinstance(item, dict) and "payload" in item and "op" not in item:
            item = item["payload"]  # the JSON converter's {schema, payload} envelope
        if item is None:
            continue  # a tombstone: Kafka log compaction's marker, nothing changed
        where = f"[{index}] " if isinstance(payload, list) else ""
        candidates.append(_debezium_change(item, snapshot, where))
    if not candidates:
        return Parsed(ignored="tombstone")
    return Parsed(candidates)


def _debezium_change(change: Any, snapshot: str, where: str) -> Candidate:
    if not isinstance(change, dict):
        raise InvalidEvent("not_debezium", [f"{where}expected a change event object"])
    problems: list[str] = []
    code = change.get("op")
    op = _DEBEZIUM_OPS.get(code) if isinstance(code, str) else None
    if op is None:
        problems.append(f"{where}op must be one of c, u, d, r, t")
    source = change.get("source")
    if not isinstance(source, dict):
        problems.append(f"{where}source must be an object")
        source = {}
    elif not isinstance(source.get("table"), str) or not source["table"]:
        problems.append(f"{where}source.table must be a non-empty string")
    before = _object_or_null(change, "before", problems)
    after = _object_or_null(change, "after", problems)
    if op in ("insert", "update", "read") and after is None:
        problems.append(f"{where}after must be an object for op {code}")
    if problems:
        raise InvalidEvent("not_debezium", problems)
    if op == "read" and snapshot == "insert":
        op = "insert"
    data: dict[str, Any] = {
        "type": str(op).upper(),
        "op": op,
        "table": source["table"],
        "schema": source.get("schema"),
        "database": source.get("db"),
        "record": after,
        "old_record": before,
        "source": source,
        "ts_ms": change.get("ts_ms"),
    }
    if change.get("transaction") is not None:
        data["transaction"] = change["transaction"]
    identity = orjson.dumps([source, code, before, after], option=orjson.OPT_SORT_KEYS)
    return Candidate(
        data,
        change,
        native_id="dbz-" + hashlib.sha256(identity).hexdigest()[:40],
        time=_iso_from_epoch(source.get("ts_ms"), 1000.0),
    )


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
    return Parsed([Candidate(payload, payload, native, _iso_from_epoch(timestamp))])


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
