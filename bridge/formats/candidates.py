"""What a payload format returns: candidate events, and the ``Format`` contract.

A format reads the decoded JSON body of one message (a webhook request, a Kafka
record, an AMQP message ...) and returns ``Parsed``: the candidate events it holds,
or why it holds none (``ignored``, e.g. a tombstone that is dropped). It knows
nothing of transports; the webhook providers and the normalizer both use it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import orjson

import bridge.jsonio as jsonio

Tombstones = Literal["drop", "event"]
TOMBSTONE_TYPE = "db/tombstone"


@dataclass(slots=True)
class Candidate:
    """One event a message holds, before the connector's mapping and the catalog.

    Attributes:
        data: the event data (template root ``data``).
        body: the raw JSON item it came from (template root ``body``).
        native_id: the producer's stable id for it, if it has one (wins over a
            transport's message id).
        time: when it happened (RFC 3339), if the producer says.
        attrs: CloudEvents only: the event's own attributes (id, source, type ...).
        type: a fixed event type for a record kind that the connector's ``event.type``
            template does not describe (a Debezium heartbeat, transaction boundary,
            schema change, message, a tombstone); such a candidate ignores the
            ``event:`` templates and keeps its own id.
        content_id: an id derived from the content, used only when neither the
            template, the producer, nor the transport gives one (Supabase).
    """

    data: Any
    body: Any
    native_id: str | None = None
    time: str | None = None
    attrs: dict[str, Any] | None = None
    type: str | None = None
    content_id: str | None = None


@dataclass(slots=True)
class Parsed:
    """The candidates of one message; ``ignored`` says why a message holds none."""

    candidates: list[Candidate] = field(default_factory=list)
    ignored: str | None = None


class Format(Protocol):
    """A payload format, independent of the transport that carried it.

    Attributes:
        name: ``debezium``, ``supabase`` ...
        default_type: the event type template used when the connector sets none.
        empty_is_tombstone: an empty body is a tombstone (given to ``parse`` as None)
            rather than unreadable.
    """

    name: str
    default_type: str | None
    empty_is_tombstone: bool

    def parse(self, value: Any, headers: Mapping[str, str]) -> Parsed:
        """The candidates of one decoded body (None: JSON ``null`` or an empty body).

        Raises:
            InvalidEvent: well-formed JSON that this format's producer does not send
                (reason ``not_<format>``, the problems in ``detail``).
        """


def digest(*parts: Any) -> str:
    """A short SHA-256 of JSON ``parts`` (keys sorted): equal content, equal digest."""
    raw = jsonio.dumps(list(parts), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:40]


def iso_from_epoch(value: Any, scale: float = 1.0) -> str | None:
    """RFC 3339 (UTC) of an epoch number in seconds * ``scale``; None when not one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        moment = datetime.fromtimestamp(value / scale, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat().replace("+00:00", "Z")


def object_or_null(change: Mapping[str, Any], name: str, problems: list[str]) -> Any:
    """``change[name]`` when it is an object or null; else a problem is noted and None."""
    value = change.get(name)
    if value is not None and not isinstance(value, dict):
        problems.append(f"{name} must be an object or null")
        return None
    return value


def unwrap(value: Any) -> Any:
    """The JSON converter's ``{"schema": ..., "payload": ...}`` envelope, opened."""
    if isinstance(value, dict) and "payload" in value and set(value) <= {"schema", "payload"}:
        return value["payload"]
    return value


def tombstone(key: Any = None, topic: str | None = None) -> Candidate:
    """The ``db/tombstone`` event of ``tombstones: event``: a null value written after
    a delete so that a compacted topic forgets the key. ``data`` is ``{key, topic}``:
    the record key (JSON decoded and unwrapped when it is JSON, else text; None on a
    webhook, which has no key) and the Kafka topic, if any."""
    if isinstance(key, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            key = unwrap(jsonio.loads(key))
    return Candidate({"key": key, "topic": topic}, None, type=TOMBSTONE_TYPE)
