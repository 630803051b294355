"""Delivery -> Event: CloudEvents modes, mappings, correlation ids, and every kind of bad input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from bridge.errors import InvalidEvent
from bridge.events import EventCatalog, EventSchema
from bridge.normalize import Normalizer
from bridge.transport import Delivery, EventMapping


class Signup(BaseModel):
    email: str
    age: int


def catalog() -> EventCatalog:
    return EventCatalog(
        {
            "user/signup": EventSchema("Signup", Signup.model_validate, Signup),
            "db/*": EventSchema("none", None),
        }
    )


def normalizer(**mapping: Any) -> Normalizer:
    return Normalizer("orders", "kafka", EventMapping(**mapping), catalog(), max_body_bytes=1000)


def delivery(body: Any, headers: dict[str, str] | None = None, **meta: Any) -> Delivery:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Delivery(raw, headers or {}, meta)


def test_structured_cloudevent_is_recognized_and_data_validated() -> None:
    event = normalizer()(
        delivery(
            {
                "specversion": "1.0",
                "id": "abc",
                "source": "/app",
                "type": "user/signup",
                "correlationid": "corr-1",
                "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
                "tenant": "acme",
                "data": {"email": "a@b.c", "age": "42"},
            },
            partition=3,
        )
    )
    assert (event.id, event.source, event.type, event.correlationid) == (
        "abc",
        "/app",
        "user/signup",
        "corr-1",
    )
    assert event.data == Signup(email="a@b.c", age=42)
    assert event.extensions == {"tenant": "acme"}
    assert event.transport["kafka.partition"] == 3


def test_transport_metadata_reads_behind_the_prefix_and_cannot_be_changed() -> None:
    event = normalizer()(
        delivery({"specversion": "1.0", "id": "1", "source": "s", "type": "db/x"},
                 topic="orders", partition=3, offset=17, key="user-1")
    )  # fmt: skip
    transport = event.transport
    assert dict(transport) == {
        "kafka.topic": "orders",
        "kafka.partition": 3,
        "kafka.offset": 17,
        "kafka.key": "user-1",
    }
    assert transport == {"kafka.topic": "orders", "kafka.partition": 3,
                         "kafka.offset": 17, "kafka.key": "user-1"}  # fmt: skip
    assert list(transport) == ["kafka.topic", "kafka.partition", "kafka.offset", "kafka.key"]
    assert len(transport) == 4 and "kafka.offset" in transport
    # Only the prefixed names: the delivery's own names are not the event's.
    assert "offset" not in transport and transport.get("offset") is None
    assert "kafka." not in transport and transport.get("amqp.offset", "none") == "none"
    with pytest.raises(KeyError):
        transport["partition"]
    with pytest.raises(TypeError):
        transport["kafka.partition"] = 4  # type: ignore[index]
    assert "kafka.partition" in repr(transport)
    assert event.as_filter_input()["transport"] == dict(transport)
    # An event of a delivery without metadata has none.
    bare = normalizer()(delivery({"specversion": "1.0", "id": "2", "source": "s", "type": "db/x"}))
    assert dict(bare.transport) == {} and len(bare.transport) == 0


def test_binary_cloudevent_headers_with_any_binding_prefix() -> None:
    for prefix in ("ce-", "ce_", "cloudEvents:", "cloudEvents_"):
        headers = {
            f"{prefix}specversion": "1.0",
            f"{prefix}id": "x1",
            f"{prefix}type": "db/users.insert",
            f"{prefix}source": "pg",
        }
        event = normalizer()(delivery({"id": 1}, headers))
        assert (event.id, event.type, event.data) == ("x1", "db/users.insert", {"id": 1})


def test_mapping_templates_stable_id_and_correlation_from_header() -> None:
    norm = normalizer(
        type="db/{data.table}.{data.type|lower}",
        correlation_id=["header:x-correlation-id", "data.cid"],
    )
    event = norm(
        delivery(
            {"table": "users", "type": "INSERT"},
            {"X-Correlation-Id": "c-9"},
            message_id="orders-0-17",
        )
    )
    assert (event.type, event.id, event.correlationid, event.source) == (
        "db/users.insert",
        "orders-0-17",
        "c-9",
        "bridge://orders",
    )
    # No header: the next reference is used; none at all: the event id.
    assert (
        norm(delivery({"table": "t", "type": "x", "cid": "c-2"}, message_id="m")).correlationid
        == "c-2"
    )
    assert norm(delivery({"table": "t", "type": "x"}, message_id="m2")).correlationid == "m2"


def test_inbound_traceparent_header_is_kept() -> None:
    tp = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    event = normalizer(type="db/x")(delivery({}, {"traceparent": tp}, message_id="m"))
    assert event.traceparent == tp


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed_json"),
        (b'{"a": "\xff\xfe"}', "invalid_utf8"),
        (b"x" * 1001, "too_large"),
        (
            {"specversion": "1.0", "id": "1", "type": "user/signup", "data": {"email": "a"}},
            "schema",
        ),
        ({"specversion": "1.0", "id": "1", "type": "nobody/knows", "data": {}}, "unknown_type"),
        ({"specversion": "1.0", "id": "", "type": "db/x", "data": {}}, "invalid_cloudevent"),
        ({"no": "type"}, "no_type"),
    ],
)
def test_bad_input_is_an_invalid_event_with_a_reason(body: Any, reason: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        normalizer()(delivery(body))
    assert info.value.reason == reason


def test_schema_errors_keep_pydantic_details() -> None:
    with pytest.raises(InvalidEvent) as info:
        normalizer(type="user/signup")(delivery({"email": "a@b.c", "age": "old"}, message_id="m"))
    assert info.value.detail == [
        {
            "loc": ["age"],
            "msg": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]


def test_mapping_with_a_missing_field_is_invalid() -> None:
    with pytest.raises(InvalidEvent) as info:
        normalizer(type="db/{data.table}")(delivery({"x": 1}, message_id="m"))
    assert info.value.reason == "mapping"


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "1", "type": "user/signup"},
        {"id": "1", "type": "user/signup", "source": ""},
        {"id": "1", "type": "user/signup", "source": "s", "subject": "x"},
        {"id": "1", "type": "user/signup", "source": "s", "subject": None},
        {"id": "1", "type": "user/signup", "subject": ""},
        {"id": "1", "type": "user/signup", "source": 5},
    ],
)
@pytest.mark.parametrize("data", [{"a": 1}, b"\x00", None])
def test_a_mapped_events_attributes_build_what_the_general_path_builds(
    raw: dict[str, Any], data: Any
) -> None:
    """``event_from_dict`` builds a mapped message's attributes (id, type, source, subject)
    without the general checks: the same event, and the same refusals, as with them."""
    from bridge import events

    def build(fast: bool) -> Any:
        plain = events._PLAIN
        events._PLAIN = plain if fast else frozenset()  # type: ignore[misc]
        try:
            kw = {"source": "bridge://orders", "correlationid": "c", "traceparent": ""}
            return events.event_from_dict(raw, data, **kw)  # type: ignore[arg-type]
        except InvalidEvent as exc:
            return exc.reason, exc.detail
        finally:
            events._PLAIN = plain  # type: ignore[misc]

    assert build(fast=True) == build(fast=False)
