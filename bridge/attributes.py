"""CloudEvents 1.0.2 attributes: the rules the bridge checks, and their text forms.

Attributes are checked as CloudEvents 1.0.2 writes them (``check_attributes``):
``id``, ``source``, ``type`` non-empty strings; ``specversion`` ``1.0``;
``subject``, ``datacontenttype``, ``dataschema`` non-empty strings when present;
``time`` RFC 3339 with an offset (``t``/``z`` written upper-case); extension names
of lower-case ASCII letters and digits (``data`` reserved) and values a string,
a boolean or an integer. A null attribute is absent. Anything else is refused
with reason ``invalid_attribute``, so no event that a CloudEvents SDK would refuse
ever leaves the bridge.

Binding text: ``attribute_text`` gives an attribute's canonical string (booleans
``true``/``false``); ``percent_encode`` the form of a ``ce-`` HTTP header.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bridge.errors import InvalidEvent

SPECVERSION = "1.0"
# Attributes of the envelope itself; anything else in a structured CloudEvent is an extension.
CONTEXT_ATTRIBUTES = frozenset(
    {
        "id",
        "source",
        "type",
        "specversion",
        "time",
        "subject",
        "datacontenttype",
        "dataschema",
        "data",
        "data_base64",
        "correlationid",
        "traceparent",
        "tracestate",
        "parentid",
    }
)
_EXTENSION_NAME = re.compile(r"[a-z0-9]+")
# RFC 3339 date-time: an offset is required (CloudEvents SDKs refuse a naive time).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.ASCII)
_OPTIONAL_STRINGS = ("subject", "datacontenttype", "dataschema")


def attribute_text(value: Any) -> str:
    """The canonical string of an attribute value (CloudEvents type system)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# HTTP binding 3.1.3.2: printable ASCII but space, '"' and '%' stays as it is.
_HEADER_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "%"}


def percent_encode(text: str) -> str:
    """``text`` percent-encoded for a ``ce-`` HTTP header (spec 3.1.3.2)."""
    if all(ch in _HEADER_SAFE for ch in text):
        return text
    return "".join(
        ch if ch in _HEADER_SAFE else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for ch in text
    )


def is_json_type(content_type: str | None) -> bool:
    """True for a JSON media type (``application/json``, ``*/*+json``), or none at all."""
    if not content_type:
        return True
    base = content_type.split(";")[0].strip().lower()
    return base.endswith(("/json", "+json"))


def is_text_type(content_type: str | None) -> bool:
    """True for a media type whose data is text: ``text/*``, XML, form data, or a charset."""
    if not content_type:
        return False
    base, _, params = content_type.partition(";")
    base = base.strip().lower()
    return (
        base.startswith("text/")
        or base.endswith(("/xml", "+xml"))
        or base in ("application/x-www-form-urlencoded", "application/javascript")
        or "charset=" in params.lower()
    )


# JSON encoders (and the SDKs) carry 64-bit integers; CloudEvents' own Integer is 32-bit,
# but producers send 64-bit sequence numbers and timestamps in extensions, so those pass.
_INT64 = -(2**63)


def check_attributes(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of a structured CloudEvent, checked and in canonical form.

    Null attributes are dropped (absent, as the JSON format says); ``time`` is
    written with upper-case ``T`` and ``Z``. ``data`` and ``data_base64`` pass
    through unchecked.

    Raises:
        InvalidEvent: reason ``invalid_attribute``; ``detail`` names each problem.
    """
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        out[key] = value
        if key in ("data", "data_base64"):
            continue
        if key in ("id", "source", "type"):
            if not isinstance(value, str) or not value:
                problems.append(f"{key} must be a non-empty string")
        elif key == "specversion":
            if value != SPECVERSION:
                problems.append(f"specversion must be '{SPECVERSION}', not {value!r}")
        elif key == "time":
            if not isinstance(value, str) or not _valid_time(value.upper()):
                problems.append(f"time must be an RFC 3339 timestamp with an offset, not {value!r}")
            else:
                out[key] = value.upper()
        elif key in _OPTIONAL_STRINGS:
            if not isinstance(value, str) or not value:
                problems.append(f"{key} must be a non-empty string when present")
        elif key not in CONTEXT_ATTRIBUTES and not _EXTENSION_NAME.fullmatch(key):
            problems.append(f"extension name {key!r} must be lower-case ASCII letters and digits")
        elif isinstance(value, float) or not isinstance(value, str | int):
            problems.append(
                f"extension {key} must be a string, a boolean or an integer,"
                f" not {type(value).__name__}"
            )
        elif (
            isinstance(value, int) and not isinstance(value, bool) and not _INT64 <= value < -_INT64
        ):
            problems.append(f"extension {key} is an integer outside the 64-bit range: {value}")
    if problems:
        raise InvalidEvent("invalid_attribute", "; ".join(problems))
    return out


def _valid_time(text: str) -> bool:
    if not _RFC3339.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def structured_data(raw: Mapping[str, Any]) -> Any:
    """The data of a structured CloudEvent: ``data``, or the bytes of ``data_base64``.

    Raises:
        InvalidEvent: reason ``invalid_cloudevent`` when ``data_base64`` is not base64 text.
    """
    if "data" in raw and raw["data"] is not None:
        return raw["data"]
    encoded = raw.get("data_base64")
    if encoded is None:
        return None
    if not isinstance(encoded, str):
        raise InvalidEvent("invalid_cloudevent", "data_base64 must be a string")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent("invalid_cloudevent", "data_base64 is not base64") from None
