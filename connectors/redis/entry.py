"""A stream entry for the bridge: the body, headers and metadata of its ``Delivery``.

An entry is a flat list of field/value pairs. The ``body_field`` (``data``) holds
the body; every other field is a header (``content-type``, ``traceparent``, and
CloudEvents attributes as ``ce-*`` fields: the binary mode of the Kafka/HTTP
bindings, values percent-encoded as there). A structured CloudEvent is a JSON body
with ``specversion``. An entry without a body field, as written by
``XADD orders * id 7 status paid``, has its fields, as a JSON object, for body.
"""

from __future__ import annotations

from typing import Any

import bridge.jsonio as jsonio


def text(value: bytes | str) -> str:
    """A field name or value as text (invalid UTF-8 replaced: headers are advisory)."""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def entry_parts(
    fields: dict[bytes, bytes], body_field: bytes
) -> tuple[bytes, dict[str, str], str | None]:
    """(body, headers, rejection) of an entry's fields.

    A rejection (``invalid_utf8``) is given when an entry without a body field has a
    field that is not UTF-8, since its JSON body cannot be written faithfully.
    """
    body = fields.get(body_field)
    if body is not None:
        headers = {text(k): text(v) for k, v in fields.items() if k != body_field}
        return body, headers, None
    try:
        plain = {bytes(k).decode(): bytes(v).decode() for k, v in fields.items()}
    except UnicodeDecodeError as exc:
        return b"", {}, f"field is not UTF-8 at byte {exc.start}"
    return jsonio.dumps(plain), {}, None


def entry_fields(body: bytes, headers: dict[str, str], body_field: str) -> dict[str, Any]:
    """The fields of an entry to XADD: the headers, then the body under ``body_field``."""
    fields: dict[str, Any] = {k: v for k, v in headers.items() if k != body_field}
    fields[body_field] = body
    return fields
