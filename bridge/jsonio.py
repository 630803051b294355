"""JSON in and out at orjson's speed, without losing an integer orjson cannot hold.

orjson reads an integer literal outside the 64-bit range [-2**63, 2**64 - 1] as a
float, silently rounded (``-9223372036854775809`` becomes ``-9.223372036854776e18``),
and refuses to write such an integer. JSON puts no bound on integers and producers
send them: Jackson writes a ``BigInteger`` as its digits, Python's ``json`` any int.
``loads`` and ``dumps`` are orjson's, with one fallback each: a document holding a
wider integer is read by the standard library, which keeps it exact, and written with
the integer embedded as its digits. Both checks cost little on the common path: a
scan for a run of 19 digits when reading, nothing at all when writing.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_MIN = -(2**63)
_MAX = 2**64 - 1
# 19 digits in a row: every integer orjson would round has at least that many.
_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_RUN = b"0" * 19
_INTEGERS = re.compile(rb"-?[0-9]{19,}")
_WIDE = "Integer exceeds 64-bit range"


def loads(raw: bytes | bytearray | memoryview | str) -> Any:
    """``orjson.loads``, except that an integer beyond 64 bits comes back exact.

    Raises:
        orjson.JSONDecodeError: as ``orjson.loads``: the document is checked by it first.
    """
    value = orjson.loads(raw)
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if _RUN not in data.translate(_DIGITS) or not any(map(_wide, _INTEGERS.findall(data))):
        return value
    try:
        # orjson accepted the document, so the standard library reads the same
        # values (its only extras, NaN and Infinity, are not in it), integers exact.
        return json.loads(data)
    except RecursionError:  # deeper than the interpreter's stack; orjson's reading stands
        return value


def _wide(run: bytes) -> bool:
    """Whether a run of digits (a leading ``-`` kept) read as an integer is beyond 64
    bits; told by its length past 20 digits, as ``int()`` refuses more than 4,300 (the
    run may be in a string or a fraction: then the fallback reads the same values)."""
    return len(run.lstrip(b"-")) > 20 or not _MIN <= int(run) <= _MAX


def dumps(value: Any, default: Any = None, option: int | None = None) -> bytes:
    """``orjson.dumps``, except that an integer beyond 64 bits is written as its digits.

    Raises:
        orjson.JSONEncodeError: as ``orjson.dumps``, for anything else it refuses.
    """
    try:
        return orjson.dumps(value, default, option)
    except orjson.JSONEncodeError as exc:
        if str(exc) != _WIDE:
            raise
        refused = exc
    try:
        widened = _widened(value)
    except RecursionError:  # deeper than orjson writes anyway (254 levels): refused as is
        raise refused from None
    return orjson.dumps(widened, default, option)


def _widened(value: Any) -> Any:
    """``value`` with every integer beyond 64 bits as a fragment of its digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        if _MIN <= value <= _MAX:
            return value
        try:
            return orjson.Fragment(str(value))
        except ValueError:  # past str()'s 4,300 digits: left for orjson to refuse
            return value
    if isinstance(value, dict):
        return {key: _widened(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_widened(item) for item in value]
    return value
