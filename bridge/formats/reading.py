"""A broker message read with a ``Format``: its event attributes and data.

Used by the normalizer for ``consume.format: debezium | supabase`` and for
tombstones on every format. One message is one record (Debezium and Supabase
never write arrays to a broker), so a body holding several is refused.

Attributes, as on webhooks: ``type`` from the connector's ``event.type``
template, else the format's default (``db/{data.table}.{data.op}``), except for
record kinds with a type of their own (a Debezium heartbeat ...), which ignore
the ``event:`` templates; ``id`` from ``event.id``, else the producer's id (a
Debezium record's digest), else the transport's message id (Kafka
``topic-partition-offset``, AMQP ``message_id``, SQS ``MessageId``), else the
content id (Supabase), else a fresh one; ``source`` from ``event.source``, else
``bridge://<connector>``; ``time`` from the record.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from bridge.errors import InvalidEvent, Skipped
from bridge.formats.candidates import Candidate, Format, Tombstones, tombstone
from bridge.templates import DELIVERY_ROOTS, Template, TemplateError, lookup
from bridge.transport import EventMapping

Decode = Callable[[bytes], Any]


def tombstone_record(meta: Mapping[str, Any], mode: Tombstones) -> Candidate:
    """The event of a Kafka tombstone (``meta["tombstone"]``: a key with a null value).

    Raises:
        Skipped: ``tombstones: drop``.
    """
    if mode == "drop":
        raise Skipped("tombstone")
    return tombstone(meta.get("key"), meta.get("topic"))


class FormatReader:
    """Reads one message's body with ``fmt`` and maps it like a webhook would.

    Args:
        fmt: the payload format.
        mapping: the connector's ``event:`` mapping.
        connector: the connector's name (default source ``bridge://<connector>``).
        decode: JSON bytes -> value (``bridge.normalize.decode_json``), raising
            ``InvalidEvent``.
    """

    def __init__(self, fmt: Format, mapping: EventMapping, connector: str, decode: Decode) -> None:
        self.fmt = fmt
        self.decode = decode
        self.connector = connector
        type_text = mapping.type or fmt.default_type
        self._type = Template(type_text, DELIVERY_ROOTS) if type_text else None
        self._id = Template(mapping.id, DELIVERY_ROOTS) if mapping.id else None
        self._source = Template(mapping.source, DELIVERY_ROOTS) if mapping.source else None
        self._subject = Template(mapping.subject, DELIVERY_ROOTS) if mapping.subject else None
        self._data_path = mapping.data
        self._default_source = f"bridge://{connector}"

    def candidate(self, body: bytes, headers: Mapping[str, str]) -> Candidate:
        """The one record of ``body``.

        Raises:
            InvalidEvent: unreadable, not the format's shape, or several records.
            Skipped: a tombstone in the body, dropped.
        """
        empty = not body.strip()
        value = None if empty and self.fmt.empty_is_tombstone else self.decode(body)
        parsed = self.fmt.parse(value, headers)
        if not parsed.candidates:
            raise Skipped(parsed.ignored or "empty")
        if len(parsed.candidates) > 1:
            raise InvalidEvent(
                f"not_{self.fmt.name}", "a message holds one record, not an array of them"
            )
        return parsed.candidates[0]

    def attributes(
        self, candidate: Candidate, headers: Mapping[str, str], meta: Mapping[str, Any]
    ) -> tuple[dict[str, Any], Any]:
        """The event attributes and data of ``candidate``.

        Raises:
            InvalidEvent: ``mapping`` when a template fails.
        """
        scope = {
            "data": candidate.data,
            "body": candidate.body,
            "header": headers,
            "headers": headers,
            "meta": meta,
            "connector": self.connector,
        }
        message_id = meta.get("message_id") if meta else None
        fallback = str(message_id) if message_id is not None else None
        if candidate.type is not None:
            source = self._default_source
            if self._source is not None:  # a template over row fields may not render here
                with contextlib.suppress(TemplateError, KeyError, TypeError):
                    source = self._source.render_str(scope) or source
            raw = {"type": candidate.type, "id": self._id_of(candidate, fallback), "source": source}
            if candidate.time:
                raw["time"] = candidate.time
            return raw, candidate.data
        if self._type is None:
            raise InvalidEvent("no_type", "the connector's event mapping has no type")
        try:
            raw = {
                "type": self._type.render_str(scope),
                "id": self._id.render_str(scope) if self._id else self._id_of(candidate, fallback),
                "source": self._source.render_str(scope) if self._source else self._default_source,
            }
            if self._subject is not None:
                raw["subject"] = self._subject.render_str(scope)
            data = candidate.data
            if self._data_path:
                data = lookup({"data": data}, f"data.{self._data_path}")
        except (TemplateError, KeyError, TypeError) as exc:
            raise InvalidEvent("mapping", f"event mapping failed: {exc}") from None
        if not raw["type"] or not raw["id"]:
            raise InvalidEvent("mapping", "the event type or id template rendered an empty string")
        if candidate.time:
            raw["time"] = candidate.time
        return raw, data

    @staticmethod
    def _id_of(candidate: Candidate, fallback: str | None) -> str:
        return candidate.native_id or fallback or candidate.content_id or str(uuid.uuid4())
