"""Shared pieces of the fuzz targets (tests/chaos/test_fuzz_*.py): Hypothesis settings
sized by ``BRIDGE_CHAOS_FULL``, strategies for bad input, a tally that becomes the
target's ``ChaosReport``, and a raw HTTP/1.1 client that can send what a polite
client would not (duplicated headers, non-ASCII header bytes, any body).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from collections import Counter
from collections.abc import Coroutine, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import orjson
from aiohttp.http_parser import SINGLETON_HEADERS
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.chaos.report import ChaosReport
from tests.conftest import CHAOS_FULL

T = TypeVar("T")

# make chaos: the 100,000 examples per target; make test: a few hundred.
# BRIDGE_FUZZ_EXAMPLES sets both (a longer local hunt, a quick look).
_OVERRIDE = os.environ.get("BRIDGE_FUZZ_EXAMPLES")


def sized(small: int) -> int:
    """Examples per target: 100,000 in make chaos, ``small`` in make test."""
    return int(_OVERRIDE) if _OVERRIDE else 100_000 if CHAOS_FULL else small


EXAMPLES = sized(200)
# A full-size target runs for minutes, past the suite's per-test timeout.
FUZZ_TIMEOUT = 4 * 3600 if CHAOS_FULL or _OVERRIDE else 120
HTTP_EXAMPLES = sized(150)


def fuzz_settings(examples: int = EXAMPLES) -> settings:
    """Generation only (no shrinking database between runs), no deadline: a loaded
    machine must not fail a run for being slow."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


class Tally:
    """Counts outcomes of one fuzz target and writes its report.

    ``outcomes`` is the histogram (HTTP status, or ``event``/reason for pure code);
    ``examples`` the number of inputs tried.
    """

    def __init__(self, scenario: str) -> None:
        self.report = ChaosReport(scenario)
        self.outcomes: Counter[str] = Counter()
        self.examples = 0

    def count(self, outcome: object) -> None:
        self.examples += 1
        self.outcomes[str(outcome)] += 1
        if self.examples % 10_000 == 0:  # a long run leaves figures even if it is stopped
            self.write(finished=False)

    def write(self, **extra: Any) -> None:
        self.report.sent = self.examples
        self.report.extra = {
            "outcomes": dict(sorted(self.outcomes.items())),
            "unhandled_exceptions": 0,  # any one fails the target before the report
            "http_500": sum(n for k, n in self.outcomes.items() if k.startswith("5")),
            "finished": True,
            **extra,
        }
        self.report.write()


# --------------------------------------------------------------------------- JSON


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value orjson can write (64-bit ints), nested a few levels."""
    cached = _JSON.get(max_leaves)
    if cached is None:
        cached = _JSON[max_leaves] = st.recursive(
            _SCALARS,
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=max_leaves,
        )
    return cached


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_JSON: dict[int, st.SearchStrategy[Any]] = {}
_ACTIONS = st.sampled_from(["replace", "delete", "add", "stringify"])
_KEYS = st.text(max_size=10)


@st.composite
def mutated(draw: st.DrawFn, docs: st.SearchStrategy[Any]) -> Any:
    """A document from ``docs`` with a few random changes: a value replaced by a value
    of any type, a key removed or added, a value turned into its JSON text."""
    doc = orjson.loads(orjson.dumps(draw(docs)))  # a deep copy
    for _ in range(draw(_ONE_TO_THREE)):
        paths: list[tuple[Any, ...]] = []
        stack: list[tuple[Any, tuple[Any, ...]]] = [(doc, ())]
        while stack:
            node, path = stack.pop()
            paths.append(path)
            if isinstance(node, dict):
                stack.extend((v, (*path, k)) for k, v in node.items())
            elif isinstance(node, list):
                stack.extend((v, (*path, i)) for i, v in enumerate(node))
        path = paths[draw(st.integers(0, len(paths) - 1))]
        if not path:
            doc = draw(json_values())
            continue
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(_ACTIONS)
        if action == "replace":
            parent[path[-1]] = draw(json_values(6))
        elif action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(_KEYS)] = draw(json_values(4))
        elif action == "stringify":
            parent[path[-1]] = orjson.dumps(parent[path[-1]]).decode()
    return doc


_ONE_TO_THREE = st.integers(1, 3)


@st.composite
def _nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 5000))
    array = draw(st.booleans())
    open_, close = (b"[", b"]") if array else (b'{"a":', b"}")
    inner = b"" if array else b"1"
    return open_ * depth + inner + (close * depth if draw(st.booleans()) else b"")


_NESTED = _nested()


def deeply_nested() -> st.SearchStrategy[bytes]:
    """Arrays or objects nested up to 5,000 deep (orjson refuses past 1,024), closed or not."""
    return _NESTED


_BREAKS = st.sampled_from(["truncate", "bad_utf8", "flip", "bom", "trailing"])
_BAD_UTF8 = st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
_TRAILERS = st.sampled_from([b" x", b",", b"}", b"\x00", b"]"])


def break_bytes(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` truncated, with invalid UTF-8 spliced in, a byte changed, a BOM, or junk after."""
    how = draw(_BREAKS)
    if how == "truncate" and len(body) > 1:
        return body[: draw(st.integers(0, len(body) - 1))]
    if how == "bad_utf8":
        at = draw(st.integers(0, len(body)))
        return body[:at] + draw(_BAD_UTF8) + body[at:]
    if how == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        return body[:at] + bytes([draw(st.integers(0, 255))]) + body[at + 1 :]
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    return body + draw(_TRAILERS)


@st.composite
def broken(draw: st.DrawFn, bodies: st.SearchStrategy[bytes]) -> bytes:
    """A body from ``bodies``, broken by ``break_bytes``."""
    return break_bytes(draw, draw(bodies))


_HUGE: dict[int, st.SearchStrategy[bytes]] = {}


def huge_string(limit: int) -> st.SearchStrategy[bytes]:
    """A JSON document holding one string just under, at, or far over ``limit`` bytes."""
    if limit not in _HUGE:
        sizes = [limit // 2, limit - 20, limit + 1, limit * 3]
        _HUGE[limit] = st.sampled_from(
            [b'{"pad": "' + b"x" * max(n - 11, 0) + b'"}' for n in sizes]
        )
    return _HUGE[limit]


_HOSTILE = re.compile(rb"[^\x20-\x7e]")


def hostile(headers: Sequence[tuple[str | bytes, str | bytes]]) -> bool:
    """True when aiohttp's HTTP parser may refuse the request itself (a plain-text 400):
    a header value with bytes outside printable ASCII, or a header that may appear
    once (RFC 9110 singletons: Content-Type, User-Agent ...) given twice."""
    if any(_HOSTILE.search(as_bytes(v)) for _, v in headers):
        return True
    names = [as_bytes(n).decode("latin-1").lower() for n, _ in headers]
    return any(names.count(n) > 1 for n in set(names) & SINGLETON_HEADERS)


# --------------------------------------------------------------------------- headers

# Header values a server must survive: empty, long, control characters (never CR/LF,
# which would end the header), bytes that are not UTF-8.
header_values = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.just(b"x" * 4000),
)
header_names = st.text("abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=20)


def as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- HTTP


class RawHTTP:
    """A keep-alive HTTP/1.1 client over one socket that writes requests byte for byte.

    ``request`` reconnects when the server closed the connection (it does after
    a 401, 408 or 413) and returns ``(status, headers, body)``.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str | bytes, str | bytes]],
        body: bytes,
    ) -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n".encode()
        for name, value in headers:
            head += as_bytes(name) + b": " + as_bytes(value) + b"\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n".encode()
        for attempt in range(2):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            try:
                self._writer.write(head + body)
                await self._writer.drain()
                return await self._response()
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _response(self) -> tuple[int, dict[str, str], bytes]:
        reader = self._reader
        if reader is None:
            raise ConnectionError("not connected")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


class LoopThread:
    """An event loop in a thread of its own, so a synchronous Hypothesis test can drive
    an async server and client: ``run(coro)`` blocks until the coroutine is done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
