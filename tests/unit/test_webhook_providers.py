"""Provider parsers against payloads shaped as the providers document them.

Supabase: database webhooks (``InsertPayload``/``UpdatePayload``/``DeletePayload``).
Debezium: PostgreSQL and MySQL connector change events, with and without the JSON
converter's ``{schema, payload}`` envelope, snapshot reads, truncates, tombstones.
PlanetScale: webhook events ``{timestamp, event, resource}``.
CloudEvents: the HTTP binding's structured, binary and batch modes.
"""

from __future__ import annotations

import base64
import contextlib
import copy
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import InvalidEvent
from connectors.webhook.providers import PROVIDERS, UNREADABLE, Parsed, parser

# --------------------------------------------------------------------------- documented payloads

SUPABASE_INSERT = {
    "type": "INSERT",
    "table": "users",
    "schema": "public",
    "record": {"id": 1, "email": "ada@example.com", "created_at": "2024-05-01T10:00:00+00:00"},
    "old_record": None,
}
SUPABASE_UPDATE = {
    "type": "UPDATE",
    "table": "users",
    "schema": "public",
    "record": {"id": 1, "email": "ada@lovelace.dev", "created_at": "2024-05-01T10:00:00+00:00"},
    "old_record": {"id": 1, "email": "ada@example.com", "created_at": "2024-05-01T10:00:00+00:00"},
}
SUPABASE_DELETE = {
    "type": "DELETE",
    "table": "users",
    "schema": "public",
    "record": None,
    "old_record": {"id": 1, "email": "ada@lovelace.dev", "created_at": "2024-05-01T10:00:00+00:00"},
}

PG_SOURCE = {
    "version": "2.7.0.Final",
    "connector": "postgresql",
    "name": "PostgreSQL_server",
    "ts_ms": 1559033904863,
    "ts_us": 1559033904863123,
    "ts_ns": 1559033904863123000,
    "snapshot": "false",
    "db": "postgres",
    "sequence": '["24023119","24023128"]',
    "schema": "public",
    "table": "customers",
    "txId": 555,
    "lsn": 24023128,
    "xmin": None,
}
ANNE = {"id": 1, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
ANNE_2 = {**ANNE, "first_name": "Anne Marie"}
SCHEMA = {"type": "struct", "fields": [], "optional": False, "name": "PostgreSQL_server.inventory"}


def debezium(op: str, before: Any, after: Any, **source: Any) -> dict[str, Any]:
    """A PostgreSQL change event payload as in Debezium's documentation."""
    return {
        "before": before,
        "after": after,
        "source": {**PG_SOURCE, **source},
        "op": op,
        "ts_ms": 1559033904863,
        "transaction": None,
    }


def envelope(payload: Any) -> dict[str, Any]:
    """The JSON converter's ``schemas.enable=true`` wrapper."""
    return {"schema": SCHEMA, "payload": payload}


MYSQL_CREATE = {
    "before": None,
    "after": {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@x.org"},
    "source": {
        "version": "2.7.0.Final",
        "connector": "mysql",
        "name": "mysql-server-1",
        "ts_ms": 1465491411000,
        "snapshot": "false",
        "db": "inventory",
        "table": "customers",
        "server_id": 223344,
        "gtid": None,
        "file": "mysql-bin.000003",
        "pos": 154,
        "row": 0,
        "thread": 7,
        "query": "INSERT INTO customers (first_name, last_name, email) VALUES (...)",
    },
    "op": "c",
    "ts_ms": 1465491411815,
}

PLANETSCALE_BRANCH_READY = {
    "timestamp": 1698253512,
    "event": "branch.ready",
    "organization": "acme",
    "database": "example_database",
    "resource": {
        "id": "rvlsi4uocyxd",
        "type": "Branch",
        "name": "add-hats",
        "created_at": "2023-10-25T17:05:12.000Z",
        "ready": True,
        "production": False,
    },
}

CE_STRUCTURED = {
    "specversion": "1.0",
    "type": "com.example.someevent",
    "source": "/mycontext",
    "subject": None,
    "id": "C234-1234-1234",
    "time": "2018-04-05T17:31:00Z",
    "comexampleextension1": "value",
    "comexampleothervalue": 5,
    "datacontenttype": "application/json",
    "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True},
}


def parse(provider: str, payload: Any, headers: dict[str, str] | None = None, **kw: Any) -> Parsed:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return parser(provider, **kw)(body, headers or {})


def reason(provider: str, payload: Any, headers: dict[str, str] | None = None) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse(provider, payload, headers)
    return info.value.reason


# --------------------------------------------------------------------------- supabase


@pytest.mark.parametrize(
    ("payload", "op"),
    [(SUPABASE_INSERT, "insert"), (SUPABASE_UPDATE, "update"), (SUPABASE_DELETE, "delete")],
)
def test_supabase_changes_keep_their_payload_and_gain_op(payload: dict[str, Any], op: str) -> None:
    (change,) = parse("supabase", payload).candidates
    assert change.data == {**payload, "op": op}
    assert change.native_id is None  # no change id of its own: see the module docstring


@pytest.mark.parametrize(
    "broken",
    [
        {**SUPABASE_INSERT, "type": "UPSERT"},
        {**SUPABASE_INSERT, "table": ""},
        {**SUPABASE_INSERT, "schema": 3},
        {**SUPABASE_INSERT, "record": None},
        {**SUPABASE_DELETE, "old_record": None},
        {**SUPABASE_UPDATE, "record": [1, 2]},
        [SUPABASE_INSERT],
        "INSERT",
    ],
)
def test_supabase_rejects_what_it_does_not_send(broken: Any) -> None:
    assert reason("supabase", broken) == "not_supabase"


# --------------------------------------------------------------------------- debezium


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize(
    ("op", "before", "after", "expected"),
    [
        ("c", None, ANNE, "insert"),
        ("u", ANNE, ANNE_2, "update"),
        ("d", ANNE_2, None, "delete"),
        ("r", None, ANNE, "read"),
        ("t", None, None, "truncate"),
    ],
)
def test_debezium_change_events_become_row_changes(
    wrapped: bool, op: str, before: Any, after: Any, expected: str
) -> None:
    payload = debezium(op, before, after)
    if op == "t":
        del payload["before"], payload["after"]  # a truncate event carries no row images
    (change,) = parse("debezium", envelope(payload) if wrapped else payload).candidates
    data = change.data
    assert (data["op"], data["type"]) == (expected, expected.upper())
    assert (data["table"], data["schema"], data["database"]) == ("customers", "public", "postgres")
    assert data["record"] == after
    assert data["old_record"] == before
    assert data["source"]["lsn"] == 24023128
    assert change.time == "2019-05-28T08:58:24.863000Z"
    assert change.native_id is not None and change.native_id.startswith("dbz-")


def test_debezium_snapshot_reads_can_be_reported_as_inserts() -> None:
    (change,) = parse("debezium", debezium("r", None, ANNE), snapshot="insert").candidates
    assert change.data["op"] == "insert"


def test_debezium_mysql_row_changes() -> None:
    (change,) = parse("debezium", MYSQL_CREATE).candidates
    assert change.data["op"] == "insert"
    assert (change.data["table"], change.data["database"]) == ("customers", "inventory")
    assert change.data["schema"] is None


@pytest.mark.parametrize("body", [b"", b"  ", b"null", orjson.dumps(envelope(None))])
def test_debezium_tombstones_are_ignored(body: bytes) -> None:
    parsed = parse("debezium", body)
    assert (parsed.candidates, parsed.ignored) == ([], "tombstone")


def test_debezium_ids_are_stable_for_a_retry_and_distinct_for_different_changes() -> None:
    first = parse("debezium", debezium("u", ANNE, ANNE_2)).candidates[0].native_id
    retry = parse("debezium", envelope(debezium("u", ANNE, ANNE_2))).candidates[0].native_id
    later = parse("debezium", debezium("u", ANNE_2, ANNE, lsn=24023200)).candidates[0].native_id
    # Snapshot reads share one position; their rows tell them apart.
    read_a = parse("debezium", debezium("r", None, ANNE)).candidates[0].native_id
    read_b = parse("debezium", debezium("r", None, ANNE_2)).candidates[0].native_id
    assert first == retry
    assert len({first, later, read_a, read_b}) == 4


def test_debezium_batch_with_a_tombstone_inside() -> None:
    batch = [debezium("d", ANNE, None), None, envelope(debezium("c", None, ANNE_2))]
    parsed = parse("debezium", batch)
    assert [c.data["op"] for c in parsed.candidates] == ["delete", "insert"]


@pytest.mark.parametrize(
    "broken",
    [
        {**debezium("c", None, ANNE), "op": "x"},
        {**debezium("c", None, None)},
        {**debezium("c", None, ANNE), "source": "pg"},
        {**debezium("c", None, ANNE), "source": {"db": "postgres"}},
        {**debezium("u", "old", ANNE)},
        [debezium("c", None, ANNE), 7],
    ],
)
def test_debezium_rejects_what_it_does_not_send(broken: Any) -> None:
    assert reason("debezium", broken) == "not_debezium"


# --------------------------------------------------------------------------- planetscale


def test_planetscale_event() -> None:
    (event,) = parse("planetscale", PLANETSCALE_BRANCH_READY).candidates
    assert event.data == PLANETSCALE_BRANCH_READY
    assert event.native_id == "planetscale:branch.ready:rvlsi4uocyxd:1698253512"
    assert event.time == "2023-10-25T17:05:12Z"


def test_planetscale_rejects_other_shapes() -> None:
    assert reason("planetscale", {"event": "branch.ready", "timestamp": "soon"}) == (
        "not_planetscale"
    )
    assert reason("planetscale", {"timestamp": 1, "resource": {}}) == "not_planetscale"


# --------------------------------------------------------------------------- cloudevents


def test_cloudevents_structured_mode_keeps_extensions() -> None:
    (event,) = parse(
        "cloudevents", CE_STRUCTURED, {"content-type": "application/cloudevents+json"}
    ).candidates
    assert event.attrs is not None and event.attrs["comexampleothervalue"] == 5
    assert event.data == CE_STRUCTURED["data"]
    assert event.native_id == "C234-1234-1234"


def test_cloudevents_binary_mode_reads_ce_headers() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-type": "com.example.someevent",
        "ce-source": "/mycontext",
        "ce-id": "A234-1234-1234",
        "ce-comexampleextension1": "value",
        "content-type": "application/json; charset=utf-8",
    }
    (event,) = parse("cloudevents", {"x": 1}, headers).candidates
    assert event.data == {"x": 1}
    assert event.attrs is not None and event.attrs["comexampleextension1"] == "value"
    text = parser("cloudevents")(b"hello", {**headers, "content-type": "text/plain"})
    assert text.candidates[0].data == "hello"
    empty = parser("cloudevents")(b"", headers)
    assert empty.candidates[0].data is None
    # Any other content type: the bytes as they are (issue 19: never refused, never lost).
    png = parser("cloudevents")(b"\x00\x01", {**headers, "content-type": "image/png"})
    assert png.candidates[0].data == b"\x00\x01"


def test_cloudevents_batch_mode() -> None:
    second = {**CE_STRUCTURED, "id": "C234-2"}
    headers = {"content-type": "application/cloudevents-batch+json"}
    parsed = parse("cloudevents", [CE_STRUCTURED, second], headers)
    assert [c.native_id for c in parsed.candidates] == ["C234-1234-1234", "C234-2"]
    assert reason("cloudevents", [], headers) == "empty_batch"
    assert reason("cloudevents", CE_STRUCTURED, headers) == "not_cloudevent"


def test_cloudevents_data_base64() -> None:
    event = {
        **{k: v for k, v in CE_STRUCTURED.items() if k != "data"},
        "datacontenttype": "text/plain",
        "data_base64": base64.b64encode(b"caf\xc3\xa9").decode(),
    }
    (parsed,) = parse("cloudevents", event).candidates
    # data_base64 is binary data (spec, JSON format 3.1): the bytes, as the SDK reads it.
    assert parsed.data == b"caf\xc3\xa9"
    broken = {**event, "data_base64": "not base64!"}
    assert reason("cloudevents", broken) == "not_cloudevent"


@pytest.mark.parametrize("missing", ["id", "source", "type", "specversion"])
def test_cloudevents_required_attributes(missing: str) -> None:
    event = copy.deepcopy(CE_STRUCTURED)
    del event[missing]
    assert reason("cloudevents", event) == "not_cloudevent"
    assert reason("cloudevents", {**CE_STRUCTURED, "specversion": "0.3"}) == "not_cloudevent"


# --------------------------------------------------------------------------- unreadable bodies


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("body", "expected"),
    [(b'{"type": "INSERT",', "malformed_json"), (b"\xff\xfe{}", "invalid_utf8")],
)
def test_broken_bodies_are_unreadable(provider: str, body: bytes, expected: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        parser(provider)(body, {})
    assert info.value.reason == expected


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# Values near the real shapes, so the checks past the first one are exercised too.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["INSERT", "UPDATE", "DELETE", "X"]) | json_values,
        "op": st.sampled_from(["c", "u", "d", "r", "t", "m"]) | json_values,
        "table": st.text() | json_values,
        "schema": st.text() | json_values,
        "record": json_values,
        "old_record": json_values,
        "before": json_values,
        "after": json_values,
        "source": st.fixed_dictionaries({}, optional={"table": st.text(), "ts_ms": json_values}),
        "event": st.text(),
        "timestamp": json_values,
        "resource": json_values,
        "payload": json_values,
        "specversion": st.just("1.0") | json_values,
        "id": json_values,
        "data_base64": json_values,
    },
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    provider=st.sampled_from(PROVIDERS),
    payload=shaped | json_values | st.lists(shaped, max_size=3),
)
def test_any_json_is_parsed_or_refused_with_invalid_event(provider: str, payload: Any) -> None:
    body = orjson.dumps(payload)
    try:
        parsed = parser(provider)(body, {})
    except InvalidEvent as exc:
        failure = exc.reason
    else:
        assert parsed.candidates or parsed.ignored
        return
    assert failure not in UNREADABLE  # the body is valid JSON: refused for its shape only


@settings(max_examples=200, deadline=None)
@given(provider=st.sampled_from(PROVIDERS), body=st.binary(max_size=200))
def test_any_bytes_are_parsed_or_refused_with_invalid_event(provider: str, body: bytes) -> None:
    with contextlib.suppress(InvalidEvent):
        parser(provider)(body, {})
