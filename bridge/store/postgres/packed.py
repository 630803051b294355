"""Array parameters sent as one text each, split again by the server.

asyncpg encodes a ``text[]`` or ``float8[]`` parameter element by element, and asks
of each element whether it is a sub-array (two ``collections.abc`` checks, each a
call into ``ABCMeta.__instancecheck__``): about 0.6 µs of the client's CPU an
element, where a text parameter costs it almost nothing. The ledger's claims and
successes send five or six arrays of one element a run, so that was a tenth of the
PostgreSQL path's CPU per event.

``pack`` joins the elements with the ASCII record separator (``SEP``, ``chr(30)``),
``None`` written as the unit separator (``NULL``, ``chr(31)``), and ``Packed`` turns
a statement's ``$n::text[]`` into ``string_to_array($n, chr(30), chr(31))``
(``float8[]`` the same, cast). The elements come back as they were: a value that
could not (one holding ``SEP``, one equal to ``NULL``, or a lone empty string, which
splits to no element at all) makes ``pack`` answer None, and the caller sends the
arrays as arrays, with the statement as written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

SEP = "\x1e"
NULL = "\x1f"
_NUMBERS = frozenset((float, int))  # what ``pack_floats`` packs (not bool, not Decimal)
_FLOAT = frozenset((float,))  # what ``pack_floats`` may write in hexadecimal
HEXADECIMAL_PROBE = "SELECT '0x1.999999999999ap-4'::float8 = 0.1::float8"
"""True on a server that reads a float written in hexadecimal (``float.hex``) as the same
double: PostgreSQL reads floats with C's ``strtod``, which does so on glibc and most
other C libraries, but its manual does not promise it."""

_ARRAY = re.compile(r"\$(\d+)::(text|float8)\[\]")


class Packed:
    """A statement with array parameters, and the same reading each from one text."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        # parameter index (from 0) -> True for float8[], False for text[]
        self.arrays = {int(n) - 1: kind == "float8" for n, kind in _ARRAY.findall(sql)}

        def split(match: re.Match[str]) -> str:
            number, kind = match.groups()
            array = f"string_to_array(${number}, chr(30), chr(31))"
            return array if kind == "text" else f"{array}::float8[]"

        self.packed = _ARRAY.sub(split, sql)

    def call(self, *args: Any, hexadecimal: bool = False) -> tuple[Any, ...]:
        """The arguments of ``conn.fetch`` / ``conn.execute``: the packed statement and
        ``args`` packed, or, if one cannot be, the statement as written and ``args``.
        ``hexadecimal``: floats may be written in hexadecimal (``pack_floats``)."""
        packed = self.args(args, hexadecimal)
        return (self.sql, *args) if packed is None else (self.packed, *packed)

    def args(self, args: Sequence[Any], hexadecimal: bool = False) -> list[Any] | None:
        """``args`` with each array argument packed; None if one cannot be (send ``sql``
        with ``args`` as they are)."""
        out = list(args)
        for index, floats in self.arrays.items():
            text = pack_floats(out[index], hexadecimal) if floats else pack(out[index])
            if text is None:
                return None
            out[index] = text
        return out


def pack(values: Sequence[str | None]) -> str | None:
    """``values`` as one text for ``string_to_array(..., chr(30), chr(31))``; None when
    they would not split back as they are."""
    if not values:
        return ""
    try:
        # All text, the common case: the joined text is searched for NULL (``memchr``),
        # and the list (a comparison a value, 20 times slower) only if it holds one.
        text = SEP.join(values)  # type: ignore[arg-type]
        if NULL in text and NULL in values:
            return None
    except TypeError:  # None among them (or not text)
        try:
            text = SEP.join([NULL if v is None else v for v in values])
        except TypeError:  # not text: sent as an array, asyncpg says what is wrong with it
            return None
        if NULL in values:
            return None
    if text.count(SEP) != len(values) - 1 or not text:  # a SEP inside; a lone ""
        return None
    return text


def pack_floats(values: Sequence[float], hexadecimal: bool = False) -> str | None:
    """``values`` (finite numbers) as one text for ``string_to_array(...)::float8[]``:
    17 significant digits read back as the same double (``repr``'s shortest text does
    too, at half the speed again). None for an infinity, a NaN or anything else.

    ``hexadecimal`` (for a server that reads it, ``HEXADECIMAL_PROBE``): floats are
    written as ``float.hex`` writes them, exact and in half the time (about 190 ns a
    value against 360 here); a list holding an integer is written in decimal."""
    if not values:
        return ""
    types = set(map(type, values))
    if not _NUMBERS.issuperset(types):
        return None
    distinct = set(values)
    hexadecimal = hexadecimal and types == _FLOAT
    try:
        if len(distinct) < len(values):
            # Repeated values (the deadline of one event's claims, a batch's finish
            # time), each formatted once: 17 digits take the slow path of Python's
            # float-to-text, about 3,000 instructions a value.
            if hexadecimal:
                text_of = {v: v.hex() for v in distinct}
            else:
                text_of = {v: format(v, ".17g") for v in distinct}
            text = SEP.join([text_of[v] for v in values])
        elif hexadecimal:
            text = SEP.join(map(float.hex, values))
        else:
            text = SEP.join(["%.17g"] * len(values)) % tuple(values)
    except OverflowError:  # an integer beyond any double
        return None
    return None if "n" in text else text  # inf, nan
