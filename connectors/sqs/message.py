"""An SQS message as a ``Delivery``: its body, its headers and its metadata.

``Delivery.headers`` are the message attributes, by name (binary values as UTF-8
text, else base64); ``meta`` carries ``message_id`` (the MessageId, stable across
redelivery), ``receive_count`` and the system attributes that are set
(``sent_timestamp``, ``group_id`` ...).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

_SYSTEM_META = (
    ("SentTimestamp", "sent_timestamp"),
    ("ApproximateFirstReceiveTimestamp", "first_receive_timestamp"),
    ("MessageGroupId", "group_id"),
    ("MessageDeduplicationId", "deduplication_id"),
    ("SequenceNumber", "sequence_number"),
)


def message_body(message: Mapping[str, Any]) -> bytes:
    """The body as bytes (SQS bodies are text; a message without one has an empty body)."""
    body = message.get("Body")
    return body.encode("utf-8") if isinstance(body, str) else b""


def message_headers(attributes: Mapping[str, Any]) -> dict[str, str]:
    """The message attributes as headers (a binary value that is not UTF-8 as base64)."""
    out: dict[str, str] = {}
    for name, value in attributes.items():
        if "StringValue" in value:
            out[name] = str(value["StringValue"])
        elif "BinaryValue" in value:
            raw = value["BinaryValue"]
            try:
                out[name] = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                out[name] = base64.b64encode(bytes(raw)).decode("ascii")
    return out


def message_meta(queue: str, message_id: str, attrs: Mapping[str, str]) -> dict[str, Any]:
    """Transport metadata from the queue name, the MessageId and the system attributes."""
    meta: dict[str, Any] = {
        "queue": queue,
        "message_id": message_id,
        "receive_count": int(attrs.get("ApproximateReceiveCount", "1")),
    }
    for name, key in _SYSTEM_META:
        value = attrs.get(name)
        if value is not None:
            meta[key] = int(value) if key.endswith("timestamp") else value
    return meta
