"""Templates over events and deliveries; routing by type, glob and CEL filter."""

from __future__ import annotations

import pytest

from bridge.events import Event
from bridge.routing import Router, Subscription, compile_filter
from bridge.templates import DELIVERY_ROOTS, Template, TemplateError, event_scope


def test_template_fields_filters_and_raw_values() -> None:
    scope = {
        "data": {"table": "users", "type": "INSERT", "ids": [1, 2]},
        "header": {"X-Tenant": "acme"},
    }
    assert Template("db/{data.table}.{data.type|lower}").render(scope) == "db/users.insert"
    assert (
        Template("{header.x-tenant}").render(scope) == "acme"
    )  # header names are case-insensitive
    assert Template("{data.ids}").render(scope) == [1, 2]  # a lone field keeps its type
    assert Template("{data.ids.1}").render(scope) == 2
    assert Template("{data.missing|default:none}").render(scope) == "none"
    assert Template("static").is_static


def test_template_errors() -> None:
    with pytest.raises(TemplateError, match="missing"):
        Template("{data.nope}").render({"data": {}})
    with pytest.raises(TemplateError, match="unknown field 'dta'"):
        Template("{dta.x}", DELIVERY_ROOTS)
    with pytest.raises(TemplateError, match="unknown template filter"):
        Template("{data.x|shout}")
    with pytest.raises(TemplateError, match="unbalanced"):
        Template("{data.x")


def test_event_scope_reads_model_attributes() -> None:
    from pydantic import BaseModel

    class User(BaseModel):
        user_id: int

    event = Event(id="e1", source="s", type="t", data=User(user_id=7))
    assert Template("user-{data.user_id}").render(event_scope(event)) == "user-7"


def _event(type_: str, **data: object) -> Event[dict[str, object]]:
    return Event(id="e", source="s", type=type_, data=dict(data))


def test_routing_by_exact_type_glob_and_list() -> None:
    subs = [
        Subscription("exact", ("db/users.insert",), "exact"),
        Subscription("glob", ("db/*",), "glob"),
        Subscription("list", ("a/b", "db/orders.*"), "list"),
    ]
    router = Router(subs)
    assert [s.handler_id for s in router.match(_event("db/users.insert"))] == ["exact", "glob"]
    assert [s.handler_id for s in router.match(_event("db/orders.delete"))] == ["glob", "list"]
    assert router.match(_event("other")) == []


def test_filters_match_and_a_failing_filter_counts_as_no_match() -> None:
    errors: list[str] = []
    subs = [
        Subscription(
            "big",
            ("order",),
            "big",
            "event.data.total > 10",
            compile_filter("event.data.total > 10"),
        ),
        Subscription("all", ("order",), "all"),
    ]
    router = Router(subs, on_filter_error=lambda h, exc: errors.append(h))
    assert [s.handler_id for s in router.match(_event("order", total=50))] == ["big", "all"]
    assert [s.handler_id for s in router.match(_event("order", total=5))] == ["all"]
    assert [s.handler_id for s in router.match(_event("order"))] == [
        "all"
    ]  # no `total`: filter fails
    assert errors == ["big"]


def test_filter_that_does_not_compile_raises_value_error() -> None:
    with pytest.raises(ValueError):
        compile_filter("event.data. ==")
