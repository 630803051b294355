"""JSON integers beyond 64 bits, read and written exactly (``bridge.jsonio``).

The producer and the parser on the other side are Python's ``json``, which keeps any
integer exact: what it writes the bridge reads as the same value, and what the bridge
writes it reads back as the value the bridge was given.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import jsonio
from bridge.errors import InvalidEvent
from bridge.normalize import decode_json

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(value=_json)
def test_what_pythons_json_writes_is_read_as_the_same_value(value: Any) -> None:
    text = json.dumps(value)
    assert jsonio.loads(text.encode()) == value
    assert jsonio.loads(text) == value
    assert json.loads(jsonio.dumps(value)) == value


@pytest.mark.parametrize(
    "literal",
    ["-9223372036854775809", "18446744073709551616", "123456789012345678901234567890"],
)
def test_a_wide_integer_is_exact_where_orjson_alone_rounds_it(literal: str) -> None:
    body = f'{{"id": {literal}, "n": [1, {literal}]}}'.encode()
    assert type(orjson.loads(body)["id"]) is float  # what the bridge did before
    got = decode_json(body)
    assert got == {"id": int(literal), "n": [1, int(literal)]}
    assert type(got["id"]) is int
    assert jsonio.dumps(got) == f'{{"id":{literal},"n":[1,{literal}]}}'.encode()


def test_long_digit_runs_that_are_not_wide_integers_keep_orjsons_reading() -> None:
    # A nanosecond timestamp (19 digits, within 64 bits), digits in a string, a float.
    body = b'{"t":1733342342123456789,"s":"123456789012345678901234","f":1.25e3}'
    assert decode_json(body) == orjson.loads(body)


def test_what_orjson_refuses_is_still_refused() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_json(b'{"a": 123456789012345678901234567890, }')
    assert caught.value.reason == "malformed_json"
    with pytest.raises(orjson.JSONEncodeError):
        jsonio.dumps({"a": object()})
    assert jsonio.dumps({"a": object(), "b": 2**70}, default=lambda _: "x") == (
        b'{"a":"x","b":1180591620717411303424}'
    )


def test_long_digit_runs_deep_values_and_huge_integers_get_clear_answers() -> None:
    """Found in review: a digit run past ``int()``'s 4,300 digits (in a string or a
    fraction) raised ``ValueError`` from ``loads``; a wide integer beside a value nested
    past the interpreter's stack raised ``RecursionError`` from ``dumps`` (so a body was
    not refused as ``too_deep``); an integer past ``str()``'s limit raised ``ValueError``."""
    text = b'{"blob": "' + b"7" * 5000 + b'", "f": 0.' + b"1" * 5000 + b"}"
    assert jsonio.loads(text) == orjson.loads(text)
    deep = b"[123456789012345678901234567890," + b"[" * 600 + b"]" * 600 + b"]"
    with pytest.raises(InvalidEvent) as caught:
        decode_json(deep)
    assert caught.value.reason == "too_deep"
    with pytest.raises(orjson.JSONEncodeError):
        jsonio.dumps({"n": 10**5000})
