"""Debezium: every kind of record a Debezium connector writes, as typed events.

Debezium writes them to Kafka topics (Kafka Connect) or posts them to one URL
(Debezium Server's HTTP sink, one record per request or a JSON array in batch
mode), with or without the JSON converter's ``{schema, payload}`` envelope.
Each kind is recognised by its documented shape:

=====================  ==========================================  ============================
record                 shape (payload)                              event type
=====================  ==========================================  ============================
row change             ``op`` c/u/d/r/t, ``source``, before/after   ``event.type`` template,
                                                                    default ``db/{table}.{op}``
logical decoding msg   ``op: m``, ``message: {prefix, content}``     ``db/<prefix>.message``
transaction boundary   ``status: BEGIN|END``, ``id``                 ``db/transaction.begin|end``
schema change          ``ddl``, ``tableChanges``, ``databaseName``   ``db/schema.change``
heartbeat              ``{ts_ms}`` only                              ``db/heartbeat``
notification           ``aggregate_type``, ``type`` (sink channel)   ``db/notification``
tombstone              null value (or an empty body)                 dropped, or ``db/tombstone``
CloudEvent             ``debezium.format.value=cloudevents``         as a row change
=====================  ==========================================  ============================

MongoDB row changes name a ``collection`` (the ``table`` of the data) and carry
their documents as extended-JSON strings (parsed into ``record``/``old_record``);
an update without the full document keeps its ``updateDescription``.

A row change's data is the shared database shape (see ``bridge.formats``). The
other kinds keep Debezium's payload as it is (a schema change keeps its ``ddl``
and ``tableChanges``; a message its base64 ``content``); their types are fixed,
so the connector's ``event:`` templates, written for row changes, never make a
heartbeat fail. Anything else is refused as ``not_debezium``.

Ids are stable for a retry of the same record: ``dbz-`` + SHA-256 of a row
change's ``source`` block, ``op``, ``before`` and ``after`` (the source block pins
the change's position in the log; the row images tell apart snapshot reads, which
share one position); of a message's ``source``, ``op`` and ``message``; of the whole
payload of the other kinds.

A CloudEvent from Debezium (``application/cloudevents+json``, the change inside
``data``, the source block in ``iodebezium*`` extension attributes) becomes the
same row change as the JSON format gives: same type and data shape (source values
that Debezium wrote as strings, such as ``lsn``, stay strings).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import orjson

import bridge.jsonio as jsonio
from bridge.errors import InvalidEvent
from bridge.formats.candidates import (
    Candidate,
    Parsed,
    Tombstones,
    digest,
    iso_from_epoch,
    object_or_null,
    tombstone,
)

OPS = {"c": "insert", "u": "update", "d": "delete", "r": "read", "t": "truncate"}
_HEARTBEAT_KEYS = frozenset({"ts_ms", "ts_us", "ts_ns"})
_PROCESSING_TIMES = ("ts_ms", "ts_us", "ts_ns")  # when Debezium saw it: differs on a re-send
# CloudEvents extension names of the transaction block (the source block's own
# ``txId`` becomes ``iodebeziumtxId``: the case tells them apart).
_CE_TX = {
    "iodebeziumtxid": "id",
    "iodebeziumtxtotalorder": "total_order",
    "iodebeziumtxdatacollectionorder": "data_collection_order",
}
# Source fields whose names lose their underscores as extension attributes.
_CE_RENAMED = {"tsms": "ts_ms", "tsus": "ts_us", "tsns": "ts_ns", "serverid": "server_id"}
_CE_PREFIX = "iodebezium"


class DebeziumFormat:
    """Debezium records (see the module docstring).

    Args:
        snapshot: ``read`` or ``insert``: how snapshot reads (``op: r``) are reported.
        tombstones: ``drop`` (the default: ``Parsed.ignored == "tombstone"``) or
            ``event`` (a ``db/tombstone`` candidate).
    """

    name: str = "debezium"
    default_type: str | None = "db/{data.table}.{data.op}"
    empty_is_tombstone: bool = True

    def __init__(self, *, snapshot: str = "read", tombstones: Tombstones = "drop") -> None:
        self.snapshot = snapshot
        self.tombstones = tombstones

    def parse(self, value: Any, headers: Mapping[str, str]) -> Parsed:
        """Candidates of one body: a record, a batch (JSON array) of them, or a tombstone.

        Raises:
            InvalidEvent: ``not_debezium``, with the problems.
        """
        items = value if isinstance(value, list) else [value]
        candidates = []
        for index, item in enumerate(items):
            if isinstance(item, dict) and "payload" in item and "op" not in item:
                item = item["payload"]  # the JSON converter's {schema, payload} envelope
            where = f"[{index}] " if isinstance(value, list) else ""
            if item is None:  # a tombstone: Kafka log compaction's marker, nothing changed
                if self.tombstones == "event":
                    candidates.append(tombstone())
                continue
            candidates.append(self.record(item, where))
        if not candidates:
            return Parsed(ignored="tombstone")
        return Parsed(candidates)

    def record(self, item: Any, where: str = "") -> Candidate:
        """One record of any kind.

        Raises:
            InvalidEvent: ``not_debezium``.
        """
        if not isinstance(item, dict):
            raise InvalidEvent("not_debezium", [f"{where}expected a change event object"])
        if "specversion" in item:
            return self.change(_from_cloudevent(item, where), where)
        if "op" in item:
            if item["op"] == "m":
                return _message(item, where)
            return self.change(item, where)
        if item.get("status") in ("BEGIN", "END") and isinstance(item.get("id"), str):
            kind = "db/transaction." + str(item["status"]).lower()
            return Candidate(
                item, item, _id(kind, item), iso_from_epoch(item.get("ts_ms"), 1e3), type=kind
            )
        if "ddl" in item or "tableChanges" in item:
            source = item.get("source")
            at = source.get("ts_ms") if isinstance(source, dict) else None
            return Candidate(
                item, item, _id("schema", item), iso_from_epoch(at, 1e3), type="db/schema.change"
            )
        if "aggregate_type" in item and "type" in item:  # notification.enabled.channels=sink
            at = item.get("timestamp")
            millis = int(at) if isinstance(at, str) and at.isdigit() else at
            return Candidate(
                item,
                item,
                _id("notification", item),
                iso_from_epoch(millis, 1e3),
                type="db/notification",
            )
        if "ts_ms" in item and set(item) <= _HEARTBEAT_KEYS:
            return Candidate(
                item,
                item,
                _id("heartbeat", item),
                iso_from_epoch(item["ts_ms"], 1e3),
                type="db/heartbeat",
            )
        raise InvalidEvent(
            "not_debezium",
            [
                f"{where}not a Debezium record: expected a change event (op), a transaction "
                "boundary (status), a schema change (ddl), a heartbeat (ts_ms), a notification "
                "(aggregate_type) or a CloudEvent"
            ],
        )

    def change(self, change: dict[str, Any], where: str) -> Candidate:
        """A row change (``op`` c, u, d, r, t) in the shared database shape.

        Raises:
            InvalidEvent: ``not_debezium``.
        """
        problems: list[str] = []
        code = change.get("op")
        op = OPS.get(code) if isinstance(code, str) else None
        if op is None:
            problems.append(f"{where}op must be one of c, u, d, r, t, m")
        source = change.get("source")
        table = None
        if not isinstance(source, dict):
            problems.append(f"{where}source must be an object")
            source = {}
        else:
            table = source.get("table") or source.get("collection")  # MongoDB: collection
            if not isinstance(table, str) or not table:
                problems.append(f"{where}source.table must be a non-empty string")
        # MongoDB writes its documents as extended-JSON strings.
        change = {**change, **_documents(change)} if source.get("collection") else change
        before = object_or_null(change, "before", problems)
        after = object_or_null(change, "after", problems)
        partial = op == "update" and isinstance(change.get("updateDescription"), dict)
        if op in ("insert", "update", "read") and after is None and not partial:
            problems.append(f"{where}after must be an object for op {code}")
        if problems:
            raise InvalidEvent("not_debezium", problems)
        if op == "read" and self.snapshot == "insert":
            op = "insert"
        data: dict[str, Any] = {
            "type": str(op).upper(),
            "op": op,
            "table": table,
            "schema": source.get("schema"),
            "database": source.get("db"),
            "record": after,
            "old_record": before,
            "source": source,
            "ts_ms": change.get("ts_ms"),
        }
        if change.get("transaction") is not None:
            data["transaction"] = change["transaction"]
        if change.get("updateDescription") is not None:  # MongoDB: the fields an update set
            data["updateDescription"] = change["updateDescription"]
        return Candidate(
            data,
            change,
            native_id="dbz-" + digest(source, code, before, after),
            time=iso_from_epoch(source.get("ts_ms"), 1000.0),
        )


def _documents(change: Mapping[str, Any]) -> dict[str, Any]:
    """MongoDB's ``before``/``after`` strings, parsed (left as they are when not JSON)."""
    parsed = {}
    for name in ("before", "after"):
        value = change.get(name)
        if isinstance(value, str):
            with contextlib.suppress(orjson.JSONDecodeError):
                parsed[name] = jsonio.loads(value)
    return parsed


def _id(kind: str, payload: Mapping[str, Any]) -> str:
    return "dbz-" + digest(kind, payload)


def _message(item: dict[str, Any], where: str) -> Candidate:
    """A PostgreSQL logical decoding message (``pg_logical_emit_message``)."""
    message = item.get("message")
    source = item.get("source")
    if not isinstance(message, dict) or not isinstance(source, dict):
        raise InvalidEvent(
            "not_debezium", [f"{where}a message (op m) has a source and a message object"]
        )
    prefix = message.get("prefix")
    kind = f"db/{prefix}.message" if isinstance(prefix, str) and prefix else "db/message"
    return Candidate(
        item,
        item,
        "dbz-" + digest(source, "m", message),
        iso_from_epoch(source.get("ts_ms"), 1000.0),
        type=kind,
    )


def _from_cloudevent(item: dict[str, Any], where: str) -> dict[str, Any]:
    """A Debezium CloudEvent as the change event the JSON format would carry."""
    data = item.get("data")
    if isinstance(data, dict) and "payload" in data and set(data) <= {"schema", "payload"}:
        data = data["payload"]  # data.serializer.type=json with schemas enabled
    source: dict[str, Any] = {}
    transaction: dict[str, Any] = {}
    for name, value in item.items():
        if name in _CE_TX:
            key = _CE_TX[name]
            transaction[key] = value if key == "id" else _number(value)
        elif name.startswith(_CE_PREFIX) and name != "iodebeziumop":
            field = name[len(_CE_PREFIX) :]
            field = _CE_RENAMED.get(field, field)
            source[field] = _number(value) if field in _PROCESSING_TIMES else value
    if not isinstance(data, dict) or "iodebeziumop" not in item or "table" not in source:
        raise InvalidEvent(
            "not_debezium",
            [
                f"{where}a Debezium CloudEvent has its change in data (JSON) and its op and "
                "table in iodebezium* attributes (extension.attributes.enable=true)"
            ],
        )
    return {
        "before": data.get("before"),
        "after": data.get("after"),
        "source": source,
        "op": item["iodebeziumop"],
        "ts_ms": source.get("ts_ms"),
        "transaction": transaction if transaction.get("id") is not None else None,
    }


def _number(value: Any) -> Any:
    """Debezium writes int64 extension values as strings; give them back as numbers."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value
