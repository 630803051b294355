"""How headers become SQS message attributes, at most 10 of them.

Headers become String message attributes, by name:

* CloudEvents binary mode uses the prefix ``ce-`` (``ce-id``, ``ce-type`` ...):
  SQS attribute names allow letters, digits, ``_``, ``-`` and ``.``, and the
  bridge's normalizer reads ``ce-``/``ce_`` alike. Other invalid characters in a
  header name become ``_``; headers with an empty value are left out (SQS
  refuses empty attributes).
* SQS allows 10 attributes per message. When there are more, copies go first:
  ``ce-traceparent``/``ce-tracestate`` equal to ``traceparent``/``tracestate``,
  ``ce-correlationid`` equal to ``x-correlation-id`` (the SQS source reads that
  attribute as the correlation id), and ``content-type: application/json`` of a
  binary CloudEvent (JSON is the default). If that is not enough, the message
  falls back to CloudEvents structured mode: the envelope in the body with
  ``content-type: application/cloudevents+json``, the other headers kept. If the
  non-CloudEvents headers alone are more than 10, ``publish`` fails
  (non-retriable ``ConnectorError``).
* SQS bodies are text (XML characters): binary-mode data that is not (bytes, or
  text with control characters) goes in structured mode too, as ``data_base64``,
  so every byte arrives.

``ce-`` values are percent-encoded as in the HTTP binding (the bridge's publish
handler writes them so, and its SQS source decodes them); the structured
fallback writes the decoded values.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import orjson

import bridge.jsonio as jsonio
from bridge.attributes import is_json_type, is_text_type
from bridge.errors import ConnectorError

MAX_ATTRIBUTES = 10
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
_CE_COPIES = (("traceparent", "traceparent"), ("tracestate", "tracestate"))
# What an SQS body may hold: the XML 1.0 characters.
_NOT_SQS_TEXT = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def sqs_text(body: bytes) -> str | None:
    """``body`` as text an SQS message can hold, or None when it cannot."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _NOT_SQS_TEXT.search(text) else text


def message_attributes(
    headers: Mapping[str, str], body: bytes, prefix: str = "ce-"
) -> tuple[dict[str, str], bytes]:
    """Message attributes for ``headers`` (at most 10), and the body to send with them.

    Raises:
        ConnectorError: (not retriable) more than 10 headers that are not CloudEvents attributes.
    """
    attrs = {attribute_name(k): v for k, v in headers.items() if v != ""}
    if sqs_text(body) is None and prefix + "specversion" in attrs:
        return _structured(attrs, body, prefix)
    if len(attrs) <= MAX_ATTRIBUTES:
        return attrs, body
    compact = dict(attrs)
    for attr, header in (*_CE_COPIES, ("correlationid", "x-correlation-id")):
        if compact.get(prefix + attr) is not None and compact.get(prefix + attr) == compact.get(
            header
        ):
            del compact[prefix + attr]
    binary = prefix + "specversion" in compact
    if (
        binary
        and compact.get("content-type") == "application/json"
        and len(compact) > MAX_ATTRIBUTES
    ):
        del compact["content-type"]
    if len(compact) <= MAX_ATTRIBUTES:
        return compact, body
    if not binary:
        raise ConnectorError(
            f"{len(attrs)} headers, but SQS allows {MAX_ATTRIBUTES} message attributes",
            retriable=False,
        )
    return _structured(attrs, body, prefix)


def _structured(attrs: dict[str, str], body: bytes, prefix: str) -> tuple[dict[str, str], bytes]:
    """CloudEvents structured mode: the envelope goes in the body, other headers stay."""
    envelope: dict[str, Any] = {}
    rest: dict[str, str] = {}
    for name, value in attrs.items():
        if name.startswith(prefix):
            envelope[name[len(prefix) :]] = unquote(value) if prefix == "ce-" else value
        else:
            rest[name] = value
    content_type = rest.pop("content-type", "") or "application/json"
    envelope["datacontenttype"] = content_type
    if body:
        text = sqs_text(body)
        try:
            if text is not None and is_json_type(content_type):
                envelope["data"] = jsonio.loads(body)
            elif text is not None and is_text_type(content_type):
                envelope["data"] = text
            else:
                envelope["data_base64"] = base64.b64encode(body).decode("ascii")
        except orjson.JSONDecodeError:
            envelope["data_base64"] = base64.b64encode(body).decode("ascii")
    rest["content-type"] = "application/cloudevents+json"
    if len(rest) > MAX_ATTRIBUTES:
        raise ConnectorError(
            f"{len(rest)} headers besides the CloudEvents attributes, but SQS allows "
            f"{MAX_ATTRIBUTES} message attributes",
            retriable=False,
        )
    return rest, jsonio.dumps(envelope)


def attribute_name(name: str) -> str:
    """A valid SQS message attribute name for a header name."""
    cleaned = _BAD_NAME_CHARS.sub("_", name)
    while ".." in cleaned:
        cleaned = cleaned.replace("..", "._")
    cleaned = cleaned.strip(".") or "_"
    if cleaned.lower().startswith(("aws.", "amazon.")):
        cleaned = "_" + cleaned  # reserved prefixes
    return cleaned[:256]
