"""An AMQP delivery for the bridge: the fields of its ``Delivery``.

``amqp_headers``, ``amqp_meta`` and ``content_hash`` map a delivered message
(aiormq's ``DeliveredMessage``) to the headers, metadata and stable id of a
``Delivery``; ``delivery_tag`` is what settles it (through ``ChannelAcks``).
See ``connectors.rabbitmq`` for the semantics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import orjson

import bridge.jsonio as jsonio
from connectors.rabbitmq.binding import ce_attribute

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage
    from pamqp.commands import Basic

# Headers the broker changes on redelivery or dead-lettering: not part of a message's identity.
_VOLATILE_HEADERS = ("x-delivery-count", "x-death", "x-first-death", "x-last-death")


def header_text(value: Any) -> str:
    """An AMQP field value as text (tables and arrays as JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float | Decimal):
        return str(value)
    return jsonio.dumps(value, default=str).decode()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CE_TIME = ("cloudevents:time", "cloudevents_time", "ce-time", "ce_time")


def ce_time_text(value: Any) -> str:
    """A CloudEvents ``time`` from AMQP as RFC 3339 (UTC, ``Z``).

    The AMQP binding lets a sender write it as an AMQP timestamp: an integer of
    milliseconds since the epoch (what the CloudEvents SDKs send), or a timestamp
    field, which arrives as a datetime without a zone (UTC). Text passes unchanged.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            moment = _EPOCH + timedelta(milliseconds=value)  # exact: no float rounding
        except OverflowError:
            return str(value)
    elif isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        return header_text(value)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def amqp_headers(message: DeliveredMessage) -> dict[str, str]:
    """The headers table as text, plus ``content-type`` from the property.

    A CloudEvents ``time`` sent as an AMQP timestamp becomes RFC 3339 (``ce_time_text``).
    """
    props = message.header.properties
    headers = {
        key: ce_time_text(value) if key.lower() in _CE_TIME else header_text(value)
        for key, value in (props.headers or {}).items()
    }
    if props.content_type and "content-type" not in headers:
        headers["content-type"] = props.content_type
    return headers


_PROPERTIES = (  # meta name, pamqp property name
    ("correlation_id", "correlation_id"),
    ("type", "message_type"),
    ("content_type", "content_type"),
    ("content_encoding", "content_encoding"),
    ("app_id", "app_id"),
    ("user_id", "user_id"),
    ("reply_to", "reply_to"),
    ("priority", "priority"),
)


def amqp_meta(message: DeliveredMessage, queue: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """Transport metadata: delivery info and the AMQP properties that are set."""
    delivery, props = deliver_frame(message), message.header.properties
    meta: dict[str, Any] = {
        "queue": queue,
        "exchange": delivery.exchange or "",
        "routing_key": delivery.routing_key or "",
        "delivery_tag": delivery.delivery_tag,
        "redelivered": bool(delivery.redelivered),
    }
    for name, prop in _PROPERTIES:
        value = getattr(props, prop)
        if value is not None:
            meta[name] = value
    if props.timestamp is not None:
        stamp = props.timestamp
        meta["timestamp"] = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).isoformat()
    count = headers.get("x-delivery-count")
    if count is not None:
        meta["delivery_count"] = int(count) if count.isdigit() else count
    message_id = props.message_id or ce_attribute({k.lower(): v for k, v in headers.items()}, "id")
    if message_id:
        meta["message_id"] = message_id
    return meta


def deliver_frame(message: DeliveredMessage) -> Basic.Deliver:
    """The ``basic.deliver`` frame of a consumed message."""
    return cast("Basic.Deliver", message.delivery)  # consumers only receive Basic.Deliver


def delivery_tag(message: DeliveredMessage) -> int:
    """The message's delivery tag (valid on its own channel only)."""
    return cast(int, deliver_frame(message).delivery_tag)


def content_hash(message: DeliveredMessage) -> str:
    """A stable id from what a redelivery does not change."""
    props = message.header.properties
    headers = {
        k: header_text(v)
        for k, v in (props.headers or {}).items()
        if not k.lower().startswith(_VOLATILE_HEADERS)
    }
    stamp = props.timestamp.isoformat() if props.timestamp else None
    identity = jsonio.dumps(
        [
            message.exchange,
            message.routing_key,
            props.correlation_id,
            props.message_type,
            props.app_id,
            stamp,
            headers,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    digest = hashlib.sha256(identity)
    digest.update(b"\0")
    digest.update(message.body)
    return "sha256:" + digest.hexdigest()
