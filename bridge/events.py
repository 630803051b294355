"""The event envelope (CloudEvents 1.0) and the typed event catalog.

``Event[T]`` is immutable. ``data`` is the validated payload: an instance of the
catalog's pydantic model for the type, plain JSON values when the type has no
schema, ``str`` for text data (``text/*``, XML ...) and ``bytes`` for any other
non-JSON data. Transport metadata is exposed read-only in ``transport`` with keys
prefixed by the transport (``kafka.partition``, ``amqp.routing_key``).

Stored form: wherever the bridge keeps an event (inbox, ledger, dead letters,
parked retries) it keeps the structured-mode JSON of ``to_dict``: bytes data as
``data_base64``, so every byte comes back on replay.

Attributes are checked as CloudEvents 1.0.2 writes them: see ``bridge.attributes``.
"""

from __future__ import annotations

import base64
import fnmatch
import importlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

import bridge.jsonio as jsonio
from bridge.attributes import CONTEXT_ATTRIBUTES as CONTEXT_ATTRIBUTES  # re-exported
from bridge.attributes import SPECVERSION as SPECVERSION  # re-exported
from bridge.attributes import (
    attribute_text,
    check_attributes,
    is_json_type,
    percent_encode,
    structured_data,
)
from bridge.errors import InvalidEvent
from bridge.frozen import fast_init

T = TypeVar("T")

EMPTY: Mapping[str, Any] = MappingProxyType({})


def now_iso() -> str:
    """The current time as an RFC 3339 string (UTC)."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def new_id() -> str:
    """A fresh random event id."""
    return str(uuid.uuid4())


@fast_init
@dataclass(frozen=True, slots=True)
class Event(Generic[T]):
    """A CloudEvents 1.0 event with typed ``data``.

    Attributes:
        correlationid: always set; shared by every event of one flow.
        parentid: the id of the event whose handler emitted this one, if any.
        extensions: other CloudEvents extension attributes, read-only.
        transport: transport metadata, keys prefixed by transport, read-only.
    """

    id: str
    source: str
    type: str
    data: T
    specversion: str = SPECVERSION
    time: str | None = None
    subject: str | None = None
    datacontenttype: str | None = "application/json"
    dataschema: str | None = None
    correlationid: str = ""
    traceparent: str | None = None
    tracestate: str | None = None
    parentid: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    transport: Mapping[str, Any] = field(default_factory=lambda: EMPTY)

    def data_json(self) -> Any:
        """``data`` as plain JSON values (models dumped in JSON mode; bytes as base64 text)."""
        if isinstance(self.data, bytes | bytearray):
            return base64.b64encode(self.data).decode("ascii")
        return jsonable(self.data)

    def data_bytes(self) -> bytes:
        """``data`` as the body of a binary-mode message: bytes as they are, text as
        UTF-8, anything else as JSON (also a string whose content type is JSON)."""
        data = self.data
        if isinstance(data, bytes | bytearray):
            return bytes(data)
        if data is None:
            return b""
        if isinstance(data, str) and not is_json_type(self.datacontenttype):
            return data.encode("utf-8")
        return jsonio.dumps(jsonable(data))

    def to_dict(self) -> dict[str, Any]:
        """The structured-mode CloudEvent as a JSON-ready dict."""
        out: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
        }
        for name in ("time", "subject", "datacontenttype", "dataschema"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.correlationid:
            out["correlationid"] = self.correlationid
        for name in ("traceparent", "tracestate", "parentid"):
            value = getattr(self, name)
            if value:
                out[name] = value
        for key, value in self.extensions.items():
            if value is not None:
                out.setdefault(key, value)
        if isinstance(self.data, bytes | bytearray):
            out["data_base64"] = base64.b64encode(self.data).decode("ascii")
        else:
            out["data"] = self.data_json()
        return out

    def to_json(self) -> bytes:
        """The structured-mode CloudEvent serialized as JSON bytes."""
        return jsonio.dumps(self.to_dict())

    def binary_headers(self, prefix: str = "ce-", *, percent: bool | None = None) -> dict[str, str]:
        """CloudEvents binary-mode headers (``ce-id``, ``ce-type`` ...) for this event.

        Values are the attributes' canonical strings (booleans ``true``/``false``).
        With ``percent`` (the default for the ``ce-`` prefix: the HTTP binding, spec
        3.1.3.2) space, ``"``, ``%`` and every character outside printable ASCII are
        percent-encoded as UTF-8; the Kafka (``ce_``) and AMQP bindings carry the
        text as it is. ``datacontenttype`` is left out: it is the content type.
        """
        if percent is None:
            percent = prefix == "ce-"
        headers: dict[str, str] = {}
        for key, value in self.to_dict().items():
            if key in ("data", "data_base64", "datacontenttype"):
                continue
            text = attribute_text(value)
            headers[f"{prefix}{key}"] = percent_encode(text) if percent else text
        return headers

    def replace(self, **changes: Any) -> Event[Any]:
        """A copy with the given attributes changed."""
        return replace(self, **changes)

    def as_filter_input(self) -> dict[str, Any]:
        """The event as CEL filter input: envelope attributes plus ``data`` and ``transport``."""
        out = self.to_dict()
        out["transport"] = dict(self.transport)
        return out


def jsonable(value: Any) -> Any:
    """Plain JSON values for ``value`` (pydantic models dumped in JSON mode)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple) and any(isinstance(v, BaseModel) for v in value):
        return [jsonable(v) for v in value]
    return value


_UNSET: Any = object()


def event_from_dict(
    raw: Mapping[str, Any],
    data: Any = _UNSET,
    *,
    source: str = "bridge",
    transport: Mapping[str, Any] = EMPTY,
    correlationid: str | None = None,
    traceparent: str | None = None,
    tracestate: str | None = None,
    time: str | None = None,
) -> Event[Any]:
    """Build an ``Event`` from a structured CloudEvent mapping.

    ``data`` (already validated) replaces ``raw["data"]`` (or ``data_base64``); the keyword
    attributes replace the mapping's when given; ``time`` (ours, unchecked) is for one without.

    Raises:
        InvalidEvent: a required attribute is missing or not a string
            (``invalid_cloudevent``), or an attribute breaks the spec
            (``invalid_attribute``, see ``check_attributes``).
    """
    event_id = raw.get("id")
    event_type = raw.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent("invalid_cloudevent", "attribute 'id' must be a non-empty string")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEvent("invalid_cloudevent", "attribute 'type' must be a non-empty string")
    if _PLAIN.issuperset(raw):  # a mapped message's attributes: nothing more to look at
        src = raw.get("source")
        subject = raw.get("subject")
        if src in (None, ""):
            src = source
        if isinstance(src, str) and (subject is None or (isinstance(subject, str) and subject)):
            data = None if data is _UNSET else data  # _UNSET: no data in the mapping
            return Event(
                id=event_id,
                source=src,
                type=event_type,
                data=data,
                specversion=SPECVERSION,
                time=time,
                subject=subject,
                datacontenttype=_OCTETS if isinstance(data, bytes) else "application/json",
                correlationid=correlationid or "",
                traceparent=traceparent or None,
                tracestate=tracestate or None,
                transport=transport,
            )
    if raw.get("source") in (None, ""):  # no source of its own: the connector's (bridge://<name>)
        raw = {**raw, "source": source}
    raw = check_attributes(raw)
    extensions = None
    for key in raw:
        if key not in CONTEXT_ATTRIBUTES:
            if extensions is None:
                extensions = {}
            extensions[key] = raw[key]
    if correlationid is None:
        found = raw.get("correlationid")
        correlationid = str(found) if found else ""
    get = raw.get
    if data is _UNSET:
        data = structured_data(raw)
    default_type = _OCTETS if isinstance(data, bytes) else "application/json"
    return Event(
        id=event_id,
        source=str(get("source") or source),
        type=event_type,
        data=data,
        specversion=str(get("specversion") or SPECVERSION),
        time=_opt_str(get("time")) if "time" in raw else time,
        subject=_opt_str(get("subject")),
        datacontenttype=_opt_str(get("datacontenttype")) or default_type,
        dataschema=_opt_str(get("dataschema")),
        correlationid=correlationid,
        traceparent=traceparent or _opt_str(get("traceparent")),
        tracestate=tracestate or _opt_str(get("tracestate")),
        parentid=_opt_str(get("parentid")),
        extensions=MappingProxyType(extensions) if extensions else EMPTY,
        transport=transport,
    )


# What an event mapping gives (``event_from_dict``'s fast path), and a binary default type.
_PLAIN, _OCTETS = frozenset({"id", "type", "source", "subject"}), "application/octet-stream"


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- catalog


class EventSchema:
    """Validation of one event type's data: a pydantic model, a JSON Schema, or none."""

    __slots__ = ("_validate", "document", "model", "name")

    def __init__(
        self,
        name: str,
        validate: Callable[[Any], Any] | None,
        model: type[Any] | None = None,
        document: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.document = document  # a JSON Schema file's content
        self._validate = validate

    def validate(self, data: Any) -> Any:
        """Return the validated data.

        Raises:
            InvalidEvent: reason ``schema``; ``detail`` lists the validation errors.
        """
        if self._validate is None:
            return data
        try:
            return self._validate(data)
        except ValidationError as exc:
            raise InvalidEvent("schema", validation_errors(exc)) from exc

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the data, for the UI and ``bridge schema``."""
        if self.model is not None:
            return TypeAdapter(self.model).json_schema()
        return self.document

    def data_schema(self) -> dict[str, Any] | None:
        """The JSON Schema of the data as handlers and filters see it (a model dumped
        by field name), or None when there is no schema."""
        if self.model is not None:
            return TypeAdapter(self.model).json_schema(mode="serialization", by_alias=False)
        return self.document


NO_SCHEMA = EventSchema("none", None)


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors, trimmed to what a reader needs (loc, msg, type)."""
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False)
    ]


def load_schema(spec: str, base_dir: Path | None = None) -> EventSchema:
    """Resolve a catalog ``schema`` value.

    ``none`` means no validation; ``package.module:Model`` imports a pydantic
    model (or any type pydantic can validate); a path ending in ``.json`` is a
    JSON Schema file.

    Raises:
        ValueError: the module, attribute or file cannot be loaded.
    """
    if spec == "none":
        return NO_SCHEMA
    if spec.endswith(".json"):
        return _json_schema(spec, base_dir)
    target = import_object(spec)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return EventSchema(spec, target.model_validate, target)
    adapter: TypeAdapter[Any] = TypeAdapter(target)
    return EventSchema(spec, adapter.validate_python, target)


def _json_schema(spec: str, base_dir: Path | None) -> EventSchema:
    import jsonschema

    path = Path(spec)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        schema = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read JSON Schema {path}: {exc}") from exc
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)

    def validate(data: Any) -> Any:
        errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if errors:
            raise InvalidEvent(
                "schema",
                [
                    {"loc": list(e.absolute_path), "msg": e.message, "type": str(e.validator)}
                    for e in errors
                ],
            )
        return data

    return EventSchema(spec, validate, document=schema)


def import_object(spec: str) -> Any:
    """Import ``package.module:attr`` (or ``package.module.attr``).

    Raises:
        ValueError: the module or attribute does not exist.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not an import path like 'package.module:name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    return target


class EventCatalog:
    """Maps event types (exact names or globs like ``db/*``) to their schema.

    An empty catalog accepts every type without validation. A non-empty one
    knows only the types that match an entry; ``resolve`` returns None for others.
    """

    def __init__(self, entries: Mapping[str, EventSchema] | None = None) -> None:
        self._exact: dict[str, EventSchema] = {}
        self._globs: list[tuple[str, EventSchema]] = []
        for pattern, schema in (entries or {}).items():
            if any(ch in pattern for ch in "*?["):
                self._globs.append((pattern, schema))
            else:
                self._exact[pattern] = schema
        self._cache: dict[str, EventSchema | None] = {}

    @property
    def open(self) -> bool:
        """True when the catalog is empty and accepts any type."""
        return not self._exact and not self._globs

    def resolve(self, event_type: str) -> EventSchema | None:
        """The schema for ``event_type``, or None when the type is unknown."""
        try:
            return self._cache[event_type]
        except KeyError:
            pass
        schema = self._exact.get(event_type)
        if schema is None:
            for pattern, candidate in self._globs:
                if fnmatch.fnmatchcase(event_type, pattern):
                    schema = candidate
                    break
            else:
                schema = NO_SCHEMA if self.open else None
        if len(self._cache) < 10_000:
            self._cache[event_type] = schema
        return schema

    def types(self) -> list[str]:
        """Every pattern in the catalog."""
        return [*self._exact, *(p for p, _ in self._globs)]

    def schema_of(self, pattern: str) -> EventSchema | None:
        """The schema registered under exactly ``pattern``."""
        return self._exact.get(pattern) or dict(self._globs).get(pattern)
