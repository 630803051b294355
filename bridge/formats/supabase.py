"""Supabase database webhooks: ``{type, table, schema, record, old_record}``.

Supabase's ``supabase_functions.http_request`` trigger posts
``jsonb_build_object('old_record', OLD, 'record', NEW, 'type', TG_OP, 'table',
TG_TABLE_NAME, 'schema', TG_TABLE_SCHEMA)``: no change id, no time. A DELETE has
``record: null``; an INSERT has ``old_record: null``.

The event id is derived from the content (``content_id``): ``supabase-`` +
SHA-256 of schema, table, type, record and old_record, so a re-sent webhook (or
the same change posted twice) is recognised and runs once. A transport's own
message id (a Standard Webhooks ``webhook-id``, a Kafka offset) wins when there is
one. The price: two real changes with identical content (the same row re-inserted
with the very same values, timestamps included, or the same no-op UPDATE twice)
count as one; a table with an ``updated_at`` column never has that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.errors import InvalidEvent
from bridge.formats.candidates import Candidate, Parsed, digest, object_or_null

_OPS = {"INSERT": "insert", "UPDATE": "update", "DELETE": "delete"}


class SupabaseFormat:
    """Supabase row changes; ``data`` is the payload plus ``op`` (insert, update, delete)."""

    name: str = "supabase"
    default_type: str | None = "db/{data.table}.{data.op}"
    empty_is_tombstone: bool = False

    def parse(self, value: Any, headers: Mapping[str, str]) -> Parsed:
        """The one change of a Supabase payload.

        Raises:
            InvalidEvent: ``not_supabase``, with the problems.
        """
        if not isinstance(value, dict):
            raise InvalidEvent(
                "not_supabase", ["expected an object {type, table, schema, record, old_record}"]
            )
        problems: list[str] = []
        kind = value.get("type")
        op = _OPS.get(kind) if isinstance(kind, str) else None
        if op is None:
            problems.append("type must be INSERT, UPDATE or DELETE")
        for name in ("table", "schema"):
            text = value.get(name)
            if not isinstance(text, str) or not text:
                problems.append(f"{name} must be a non-empty string")
        record = object_or_null(value, "record", problems)
        old_record = object_or_null(value, "old_record", problems)
        if op in ("insert", "update") and record is None:
            problems.append(f"record must be an object for {kind}")
        if op == "delete" and old_record is None:
            problems.append("old_record must be an object for DELETE")
        if problems:
            raise InvalidEvent("not_supabase", problems)
        content = digest(value["schema"], value["table"], kind, record, old_record)
        return Parsed([Candidate({**value, "op": op}, value, content_id="supabase-" + content)])
