"""``fast_init``: the same construction as the dataclass's own ``__init__``, still frozen."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.events import Event
from bridge.frozen import fast_init
from bridge.transport import Delivery


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str = "b"
    c: list[int] = field(default_factory=list)


Fast = fast_init(dataclass(frozen=True, slots=True)(type("Fast", (), {
    "__annotations__": {"a": "int", "b": "str", "c": "list[int]"},
    "b": "b",
    "c": field(default_factory=list),
})))  # fmt: skip


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((1,), {}), ((1, "x"), {}), ((1, "x", [2]), {}), ((), {"a": 3, "c": [4]}), ((5,), {"b": "y"})],
)
def test_it_builds_what_the_dataclass_init_builds(args: Any, kwargs: Any) -> None:
    plain, fast = Plain(*args, **kwargs), Fast(*args, **kwargs)
    assert dataclasses.astuple(plain) == dataclasses.astuple(fast)
    assert repr(fast) == repr(plain).replace("Plain", "Fast")
    assert pickle.loads(pickle.dumps(fast)) == fast


def test_each_instance_gets_its_own_default_from_a_factory() -> None:
    one, two = Fast(1), Fast(2)
    assert one.c == [] and one.c is not two.c


def test_it_refuses_what_the_dataclass_refuses_and_stays_frozen() -> None:
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'a'"):
        Fast()
    with pytest.raises(TypeError, match="unexpected keyword argument 'd'"):
        Fast(1, d=2)
    with pytest.raises(TypeError, match="takes from 2 to 4 positional arguments"):
        Fast(1, "b", [], 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Fast(1).a = 2  # type: ignore[misc]


def test_it_takes_only_plain_frozen_slotted_dataclasses() -> None:
    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class Unslotted:
        a: int

    @dataclass(frozen=True, slots=True)
    class Later:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True, slots=True)
    class Keyword:
        a: int = field(kw_only=True)

    for cls in (Mutable, Unslotted, Later, Keyword):
        with pytest.raises(TypeError, match="not a plain frozen, slotted dataclass"):
            fast_init(cls)


def test_events_and_deliveries_are_made_as_before() -> None:
    event = Event("e1", "src", "t/x", {"a": 1}, subject="s")
    assert {f.name: getattr(event, f.name) for f in dataclasses.fields(Event)} == {
        "id": "e1",
        "source": "src",
        "type": "t/x",
        "data": {"a": 1},
        "specversion": "1.0",
        "time": None,
        "subject": "s",
        "datacontenttype": "application/json",
        "dataschema": None,
        "correlationid": "",
        "traceparent": None,
        "tracestate": None,
        "parentid": None,
        "extensions": {},
        "transport": {},
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.id = "e2"  # type: ignore[misc]
    one, two = Delivery(b"1"), Delivery(b"2", connector="c")
    assert one.headers == {} and one.headers is not two.headers and two.connector == "c"
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.body = b"3"  # type: ignore[misc]
