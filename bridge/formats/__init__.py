"""Payload formats, independent of the transport that carried them.

``consume.format`` on every consuming connector (Kafka, RabbitMQ, SQS, memory ...)
and the webhook ``provider`` both pick one:

* ``json`` (default for brokers): the body is JSON mapped by ``event:``; a CloudEvent
  (binary ``ce-`` headers, or a structured body) is recognised and kept as it is;
* ``cloudevents``: every message must be a CloudEvent; anything else is
  dead-lettered as ``not_cloudevent``;
* ``debezium``: ``bridge.formats.debezium`` (row changes, transaction boundaries,
  heartbeats, schema changes, logical decoding messages, tombstones, CloudEvents);
* ``supabase``: ``bridge.formats.supabase``.

Database formats share one data shape, a superset of Supabase's payload, so a
handler of ``db/*`` events reads Supabase and Debezium changes alike, whichever
transport brought them::

    {"type": "INSERT", "op": "insert", "table": "users", "schema": "public",
     "record": {...} | null, "old_record": {...} | null, ...}

``op`` is ``insert``, ``update``, ``delete``, ``read`` (a Debezium snapshot read;
``snapshot: insert`` reports those as inserts) or ``truncate``; ``type`` is the
same in capitals. Debezium adds ``database``, ``source`` (its source block: lsn,
ts_ms, ...), ``ts_ms`` and ``transaction`` when present.

Tombstones (a record with a key and a null value, written after each delete on a
compacted topic): ``tombstones: drop`` (the default, what CDC consumers expect:
nothing to do, the delete event came before) acknowledges them without an event;
``tombstones: event`` makes a ``db/tombstone`` event, ``data: {key, topic}``.
"""

from __future__ import annotations

from typing import Literal

from bridge.formats.candidates import (
    TOMBSTONE_TYPE,
    Candidate,
    Format,
    Parsed,
    Tombstones,
    tombstone,
)
from bridge.formats.debezium import DebeziumFormat
from bridge.formats.supabase import SupabaseFormat

FormatName = Literal["json", "cloudevents", "debezium", "supabase"]


def format_for(
    name: str, *, snapshot: str = "read", tombstones: Tombstones = "drop"
) -> Format | None:
    """The ``Format`` called ``name``; None for ``json`` and ``cloudevents``, which the
    normalizer reads itself.

    Raises:
        ValueError: an unknown name.
    """
    if name == "debezium":
        return DebeziumFormat(snapshot=snapshot, tombstones=tombstones)
    if name == "supabase":
        return SupabaseFormat()
    if name in ("json", "cloudevents"):
        return None
    raise ValueError(f"unknown format {name!r}")


__all__ = [
    "TOMBSTONE_TYPE",
    "Candidate",
    "DebeziumFormat",
    "Format",
    "FormatName",
    "Parsed",
    "SupabaseFormat",
    "Tombstones",
    "format_for",
    "tombstone",
]
