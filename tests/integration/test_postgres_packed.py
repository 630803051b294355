"""Array parameters sent to PostgreSQL as one text each (``bridge.store.postgres.packed``):
the server splits them back element for element; what could not come back as it was
is sent as arrays (``test_postgres_store``: the ledger reads every entry back the same
either way)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.store.contracts import LedgerEntry
from bridge.store.postgres import batch
from bridge.store.postgres.packed import HEXADECIMAL_PROBE, NULL, SEP, Packed, pack, pack_floats
from tests.fixtures.postgres import POSTGRES_URL, fresh_store

pytestmark = pytest.mark.integration

# Texts as producers make them (any Unicode but NUL, which PostgreSQL's text refuses),
# the separators themselves included, and None (SQL NULL).
TEXTS = st.lists(
    st.one_of(
        st.none(),
        st.text(st.characters(blacklist_characters="\x00")),
        st.sampled_from(["", SEP, NULL, f"a{SEP}b", f"source{NULL}id", "ü€𝄞"]),
    ),
    max_size=12,
)
FLOATS = st.lists(
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53)),
    max_size=12,
)


def _split(sql: str, *args: object) -> list[object]:
    async def run() -> list[object]:
        import asyncpg

        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            return list(await conn.fetchval(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@settings(max_examples=60, deadline=None)
@given(TEXTS)
def test_texts_packed_come_back_from_the_server_as_they_were(
    postgres: str, values: list[str | None]
) -> None:
    text = pack(values)
    statement = Packed("SELECT $1::text[]")
    if text is None:  # cannot: a separator inside, a NULL marker, a lone empty string
        assert statement.args([values]) is None
        assert any(v is not None and (SEP in v or v == NULL) for v in values) or values == [""]
        return
    assert statement.args([values]) == [text]
    assert _split(statement.packed, text) == values


@settings(max_examples=40, deadline=None)
@given(FLOATS)
def test_numbers_packed_come_back_as_the_same_doubles(postgres: str, values: list[float]) -> None:
    text = pack_floats(values)
    assert text is not None
    assert _split(Packed("SELECT $1::float8[]").packed, text) == [float(v) for v in values]


@settings(max_examples=40, deadline=None)
@given(FLOATS, st.integers(min_value=2, max_value=5))
def test_repeated_numbers_packed_come_back_as_the_same_doubles(
    postgres: str, values: list[float], times: int
) -> None:
    """Values repeated (one event's claims share a deadline, a batch its finish time),
    which are formatted once each, come back in their order as the same doubles."""
    repeated = [v for v in values for _ in range(times)] + values
    text = pack_floats(repeated)
    assert text is not None
    assert _split(Packed("SELECT $1::float8[]").packed, text) == [float(v) for v in repeated]


DOUBLES = st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=12)


@settings(max_examples=40, deadline=None)
@given(DOUBLES, st.integers(min_value=1, max_value=3))
def test_floats_packed_in_hexadecimal_come_back_as_the_same_doubles(
    postgres: str, values: list[float], times: int
) -> None:
    """Written as ``float.hex`` writes them (subnormals, -0.0 and the largest double
    included), repeated or not, they come back in their order bit for bit."""
    repeated = [v for v in values for _ in range(times)]
    text = pack_floats(repeated, hexadecimal=True)
    assert text is not None
    assert all(part.lstrip("-").startswith("0x") for part in text.split(SEP) if part)
    back = _split(Packed("SELECT $1::float8[]").packed, text)
    assert [v.hex() for v in back] == [v.hex() for v in repeated]  # type: ignore[attr-defined]


def test_a_list_with_an_integer_is_packed_in_decimal_even_when_hexadecimal_may_be() -> None:
    assert pack_floats([1.5, 2], hexadecimal=True) == f"1.5{SEP}2"
    assert pack_floats([1.5, float("inf")], hexadecimal=True) is None
    assert pack_floats([float("nan")], hexadecimal=True) is None
    assert (
        pack_floats([0.5, 0.5], hexadecimal=True)
        == f"0x1.0000000000000p-1{SEP}0x1.0000000000000p-1"
    )


async def test_the_store_sends_floats_in_hexadecimal_only_to_a_server_that_reads_them(
    postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This server reads them (the probe says so); a store whose probe the server refuses
    sends decimals. Either way a claim's deadline and a success's finish time are stored
    as the very doubles sent."""
    finished = [1733580000.1234567, 1.0e-310, 2.0**-1074 * 3, 1733580000.0]
    for refused in (False, True):
        if refused:  # a server whose C library reads no hexadecimal
            monkeypatch.setattr(batch, "HEXADECIMAL_PROBE", "SELECT 'no hexadecimal'::float8")
        async with fresh_store() as store:
            assert store.hexadecimal is not refused
            entries = [
                LedgerEntry("h", f"k{i}", "e", finished_at=f) for i, f in enumerate(finished)
            ]
            await store.ledger_record(entries)
            now = 1733580000.5
            claims = [("g", f"k{i}") for i in range(3)]
            assert await store.ledger_claim(
                claims, [], "e", "me", now, now + 61.25
            ) == dict.fromkeys(claims, "claimed")
            got = await store.ledger_get([(e.handler, e.key) for e in entries])
            assert [got[(e.handler, e.key)].finished_at for e in entries] == finished
            async with store._pool.acquire() as conn:
                assert await conn.fetchval(HEXADECIMAL_PROBE) is True  # this server reads them
                until = await conn.fetch("SELECT finished_at FROM ledger WHERE handler = 'g'")
            assert [r["finished_at"] for r in until] == [now + 61.25] * 3


def test_what_cannot_be_packed_is_said_so() -> None:
    assert pack([]) == "" and pack_floats([]) == ""
    assert pack([""]) is None and pack(["", ""]) == SEP
    assert pack([f"a{SEP}"]) is None and pack([NULL]) is None and pack([None, NULL]) is None
    assert pack([None, "x"]) == f"{NULL}{SEP}x"
    assert pack(["x", 3]) is None  # type: ignore[list-item]  # sent as an array: asyncpg refuses it
    assert pack_floats([1.5, float("inf")]) is None and pack_floats([float("nan")]) is None
    assert pack_floats([True]) is None  # type: ignore[list-item]
    assert pack_floats([10**400]) is None  # no double holds it: asyncpg says so
    claim = Packed("SELECT $1::text[], $2, $3::float8[]")
    assert claim.arrays == {0: False, 2: True}
    assert claim.args([["a", "b"], 7, [1.0]]) == [f"a{SEP}b", 7, "1"]
    assert claim.packed == (
        "SELECT string_to_array($1, chr(30), chr(31)), $2,"
        " string_to_array($3, chr(30), chr(31))::float8[]"
    )
