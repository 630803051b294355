"""Fuzz target: normalization (``bridge.normalize.Normalizer``), Delivery -> Event.

Every delivery, however broken, either becomes an event that can be stored (its
structured JSON serializes) or raises ``InvalidEvent`` with a reason, which the
dispatcher turns into a dead letter. Nothing else may escape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from bridge.errors import InvalidEvent
from bridge.events import EventCatalog, EventSchema, load_schema
from bridge.normalize import Normalizer
from bridge.transport import Delivery, EventMapping
from tests.chaos.fuzz_inputs import (
    EXAMPLES,
    FUZZ_TIMEOUT,
    Tally,
    broken,
    deeply_nested,
    fuzz_settings,
    header_names,
    header_values,
    huge_string,
    json_values,
    mutated,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(FUZZ_TIMEOUT)]
LIMIT = 4096


class Signup(BaseModel):
    email: str
    age: int
    tags: list[str] = []


def catalog(tmp: Path) -> EventCatalog:
    schema_file = tmp / "order.json"
    schema_file.write_text(
        json.dumps(
            {
                "type": "object",
                "required": ["id", "total"],
                "properties": {"id": {"type": "integer"}, "total": {"type": "number"}},
            }
        )
    )
    return EventCatalog(
        {
            "user/signup": EventSchema("Signup", Signup.model_validate, Signup),
            "order/placed": load_schema(str(schema_file)),
            "db/*": EventSchema("none", None),
        }
    )


SIGNUP_CE = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "/app",
    "type": "user/signup",
    "correlationid": "c-1",
    "data": {"email": "a@b.c", "age": 3, "tags": ["x"]},
}
ORDER_CE = {**SIGNUP_CE, "type": "order/placed", "data": {"id": 1, "total": 2.5}}
ROW = {"table": "users", "type": "INSERT", "record": {"id": 1}, "cid": "c-9"}

documents = st.sampled_from([SIGNUP_CE, ORDER_CE, ROW, [SIGNUP_CE], {"data": ROW}])
event_types = st.sampled_from(
    ["user/signup", "order/placed", "db/users.insert", "db/", "nobody/knows", "", "db/*"]
) | st.text(max_size=12)

bodies = st.one_of(
    documents.map(orjson.dumps),
    mutated(documents).map(orjson.dumps),
    broken(documents.map(orjson.dumps)),
    json_values().map(orjson.dumps),
    deeply_nested(),
    huge_string(LIMIT),
    st.binary(max_size=300),
    st.builds(
        lambda t, d: orjson.dumps({**SIGNUP_CE, "type": t, "data": d}), event_types, json_values()
    ),
)


@st.composite
def header_maps(draw: st.DrawFn) -> dict[str, str]:
    headers: dict[str, str] = {}
    if draw(st.booleans()):  # CloudEvents binary mode, complete or not
        prefix = draw(st.sampled_from(["ce-", "ce_", "cloudEvents:", "cloudEvents_", "CE-"]))
        for name in draw(
            st.lists(
                st.sampled_from(["specversion", "id", "type", "source", "datacontenttype"]),
                unique=True,
            )
        ):
            value = {"type": draw(event_types), "specversion": "1.0"}.get(name)
            headers[prefix + name] = value if value is not None else draw(st.text(max_size=15))
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=4)):
        text = value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")
        headers[name] = text
    if draw(st.booleans()):
        headers["content-type"] = draw(
            st.sampled_from(["application/json", "text/plain", "image/png", "", "x+json; a=b"])
        )
    return headers


metas = st.dictionaries(
    st.sampled_from(["message_id", "partition", "offset", "key", "topic"]),
    st.none() | st.integers(-5, 5) | st.text(max_size=8) | st.binary(max_size=4),
)


def test_fuzz_normalize(tmp_path: Path) -> None:
    cat = catalog(tmp_path)
    normalizers = [
        Normalizer("plain", "kafka", EventMapping(), cat, LIMIT),
        Normalizer(
            "rows",
            "amqp",
            EventMapping(
                type="db/{data.table}.{data.type|lower}",
                id="{meta.message_id}",
                subject="{header.x-tenant|default:-}",
                correlation_id=["header:x-correlation-id", "data.cid", "meta.key"],
            ),
            cat,
            LIMIT,
        ),
        Normalizer("nested", "sqs", EventMapping(type="user/signup", data="data"), cat, LIMIT),
    ]
    tally = Tally("fuzz_normalize")

    @fuzz_settings(EXAMPLES)
    @given(
        which=st.integers(0, len(normalizers) - 1),
        body=bodies,
        headers=header_maps(),
        meta=metas,
    )
    def check(which: int, body: bytes, headers: dict[str, str], meta: dict[str, Any]) -> None:
        delivery = Delivery(body, headers, meta)
        try:
            event = normalizers[which](delivery)
        except InvalidEvent as exc:
            failure = exc
        else:
            assert len(body) <= LIMIT
            assert isinstance(event.id, str) and event.id
            assert isinstance(event.type, str) and cat.resolve(event.type) is not None
            assert isinstance(event.correlationid, str) and event.correlationid
            orjson.loads(event.to_json())  # the inbox and the dead letters store this
            tally.count("event")
            return
        assert isinstance(failure.reason, str) and failure.reason
        assert str(failure)  # the dead letter's reason text
        orjson.dumps(failure.detail, default=str)  # the dead letter stores the detail
        if len(body) > LIMIT:
            assert failure.reason == "too_large"
        tally.count(failure.reason)

    try:
        check()
    finally:
        tally.write()
    assert tally.examples >= min(EXAMPLES, 100)
    assert tally.outcomes["event"] > 0 and len(tally.outcomes) > 5
