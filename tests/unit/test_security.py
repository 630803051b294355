"""Tokens, loopback-only admin endpoints and body timeouts, on a real runtime on a real port.

* the event API needs ``server.api.token`` when it is set;
* the admin endpoints (``/v1/dead-letters...``, ``/ui...``, ``/metrics`` when asked)
  need ``server.admin.token`` (default: the API token) and, with
  ``server.admin.local_only``, a loopback client;
* a body that never finishes arriving is answered 408 after ``server.body_timeout``
  and its connection is closed, on the event API and on a webhook.
"""

from __future__ import annotations

import asyncio
import socket
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from tests.support import free_port

CONFIG = """\
version: 1
store: sqlite:///{db}
server:
  listen: "{host}:{port}"
  api: {{token: {api_token}}}
  admin: {{token: {admin_token}, local_only: {local_only}, metrics: {metrics}}}
  body_timeout: 300ms
  idle_timeout: 2s
defaults: {{retry: {{attempts: 1}}}}
events:
  note/*: {{schema: none}}
connectors:
  hook:
    type: webhook
    provider: json
    event: {{type: "note/{{data.kind}}"}}
    auth: {{secret: hook-secret}}
handlers:
  - {{id: fail, on: "note/*", type: python, function: "tests.unit.test_security:fail"}}
"""


async def fail(event: Any, ctx: Any) -> None:
    raise RuntimeError("always")


class Bridge:
    def __init__(self, runtime: Runtime, port: int, session: aiohttp.ClientSession) -> None:
        self.runtime = runtime
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.session = session

    async def call(
        self, method: str, path: str, token: str | None = None, url: str | None = None, **kw: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(
            method, f"{url or self.url}{path}", headers=headers, **kw
        ) as resp:
            text = await resp.text()
            try:
                body = orjson.loads(text)
            except orjson.JSONDecodeError:
                body = text
            return resp.status, body, resp

    def connections(self) -> int:
        return len(self.runtime.server._runner.server.connections)


async def running(
    tmp_path: Path,
    *,
    api_token: str = "null",
    admin_token: str = "null",
    local_only: bool = False,
    metrics: bool = False,
    host: str = "127.0.0.1",
) -> AsyncIterator[Bridge]:
    port = free_port()
    text = CONFIG.format(
        db=tmp_path / "s.db",
        host=host,
        port=port,
        api_token=api_token,
        admin_token=admin_token,
        local_only=str(local_only).lower(),
        metrics=str(metrics).lower(),
    )
    runtime = Runtime(load_config_text(textwrap.dedent(text), {}))
    task = asyncio.create_task(runtime.run())
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        for _ in range(200):
            if task.done():
                task.result()
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        yield Bridge(runtime, port, session)
    runtime.request_stop()
    await task


def event(event_id: str) -> dict[str, Any]:
    return {"specversion": "1.0", "id": event_id, "type": "note/x", "source": "t", "data": {}}


async def dead_letter(bridge: Bridge, token: str | None) -> str:
    status, _, _ = await bridge.call("POST", "/v1/events", token, json=event("e1"))
    assert status == 202
    for _ in range(200):
        letters = await bridge.runtime.store.dead_letters(limit=10)
        if letters:
            return letters[0].id
        await asyncio.sleep(0.02)
    raise AssertionError("no dead letter")


ADMIN_CALLS = [
    ("GET", "/v1/dead-letters"),
    ("GET", "/v1/dead-letters/{id}"),
    ("POST", "/v1/dead-letters/{id}/discard"),
    ("POST", "/v1/dead-letters/{id}/replay"),
    ("GET", "/ui"),
    ("GET", "/ui/api/anything"),
]


# --------------------------------------------------------------------------- tokens


async def test_admin_token_guards_every_admin_path(tmp_path: Path) -> None:
    async for bridge in running(tmp_path, api_token="api-t0ken", admin_token="adm1n-t0ken"):
        letter = await dead_letter(bridge, "api-t0ken")
        denied = 0
        for method, path in ADMIN_CALLS:
            for token in (None, "api-t0ken", "adm1n-t0ke", "adm1n-t0ken\u00e9", ""):
                status, body, resp = await bridge.call(method, path.format(id=letter), token)
                assert (status, body["error"]) == (401, "missing or wrong bearer token")
                assert resp.content_type == "application/problem+json"
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                denied += 1
        assert denied == 30
        # The token opens them; unknown UI paths are then plain 404s, not 401s.
        status, body, _ = await bridge.call("GET", "/v1/dead-letters", "adm1n-t0ken")
        assert (status, [d["id"] for d in body["items"]]) == (200, [letter])
        status, _, _ = await bridge.call("GET", f"/v1/dead-letters/{letter}", "adm1n-t0ken")
        assert status == 200
        status, _, _ = await bridge.call("GET", "/ui/api/anything", "adm1n-t0ken")
        assert status == 404
        # The admin token is not the event API's token.
        status, _, _ = await bridge.call("POST", "/v1/events", "adm1n-t0ken", json=event("e2"))
        assert status == 401
        # Health, readiness and (by default) metrics stay open for probes and scrapers.
        for path in ("/healthz", "/readyz", "/metrics"):
            status, _, _ = await bridge.call("GET", path)
            assert status == 200, path
        status, body, _ = await bridge.call(
            "POST", f"/v1/dead-letters/{letter}/discard", "adm1n-t0ken"
        )
        assert (status, body) == (200, {"discarded": letter})


async def test_api_token_guards_the_admin_paths_when_no_admin_token(tmp_path: Path) -> None:
    async for bridge in running(tmp_path, api_token="api-t0ken", metrics=True):
        status, _, _ = await bridge.call("GET", "/v1/dead-letters")
        assert status == 401
        status, _, _ = await bridge.call("GET", "/metrics")
        assert status == 401
        status, _, _ = await bridge.call("GET", "/v1/dead-letters", "api-t0ken")
        assert status == 200
        status, body, _ = await bridge.call("GET", "/metrics", "api-t0ken")
        assert status == 200 and "bridge_" in body
        # Another spelling of an admin path does not slip past the guard.
        for path in ("/v1/dead-letters/", "/v1/dead-letters?status=pending", "/ui/"):
            status, _, _ = await bridge.call("GET", path)
            assert status == 401, path


async def test_a_browser_logs_in_to_the_ui_once_with_the_token(tmp_path: Path) -> None:
    async for bridge in running(tmp_path, admin_token="adm1n-t0ken"):
        status, _, _ = await bridge.call("GET", "/ui?token=wrong", allow_redirects=False)
        assert status == 401
        status, _, resp = await bridge.call(
            "GET", "/ui?token=adm1n-t0ken&x=1", allow_redirects=False
        )
        assert status == 303 and resp.headers["Location"] == "/ui?x=1"
        cookie = resp.cookies["bridge_admin_token"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        # The cookie now opens the admin endpoints (the UI's fetches carry it).
        status, _, _ = await bridge.call("GET", "/v1/dead-letters")
        assert status == 200
        bridge.session.cookie_jar.clear()
        status, _, _ = await bridge.call("GET", "/v1/dead-letters")
        assert status == 401


def _outward_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # no packet is sent
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_local_only_refuses_other_clients_with_403(tmp_path: Path) -> None:
    outward = _outward_address()
    if outward is None:
        pytest.skip("this machine has no non-loopback address to connect from")
    async for bridge in running(tmp_path, host="0.0.0.0", local_only=True):
        remote = f"http://{outward}:{bridge.port}"
        for method, path in ADMIN_CALLS:
            status, body, _ = await bridge.call(method, path.format(id="x"), url=remote)
            assert status == 403, path
            assert body["error"] == "the admin endpoints answer loopback clients only"
        # The same requests from loopback pass; the event API is not an admin endpoint.
        status, _, _ = await bridge.call("GET", "/v1/dead-letters")
        assert status == 200
        status, _, _ = await bridge.call("POST", "/v1/events", json=event("r1"), url=remote)
        assert status == 202


# --------------------------------------------------------------------------- slow bodies


async def _open(bridge: Bridge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", bridge.port)


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body, and whether the server then closed the connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    try:
        rest = await asyncio.wait_for(reader.read(), 30)
    except ConnectionResetError:
        rest = b""  # closed with unread bytes of ours: a reset is a close too
    return status, body, rest == b""


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/events", "Content-Type: application/json\r\n"),
        ("/hooks/hook", "X-Webhook-Secret: hook-secret\r\n"),
    ],
)
async def test_a_body_that_stops_arriving_is_408_and_the_connection_freed(
    tmp_path: Path, path: str, headers: str
) -> None:
    async for bridge in running(tmp_path):
        before = bridge.connections()
        clients = []
        for stop_after in (0, 5, 20):  # nothing, a few bytes, most of the body
            reader, writer = await _open(bridge)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: 100\r\n\r\n".encode()
                + b'{"kind": "a", "pad": "'[:stop_after]
            )
            await writer.drain()
            clients.append((reader, writer))
        answers = [await _answer(reader) for reader, _ in clients]
        assert [(status, closed) for status, _, closed in answers] == [(408, True)] * 3
        assert all(b"did not arrive" in body for _, body, _ in answers)
        for _, writer in clients:
            writer.close()
        for _ in range(100):
            if bridge.connections() <= before:
                break
            await asyncio.sleep(0.02)
        assert bridge.connections() <= before
        # Nothing was stored, and the server still answers everyone else.
        assert await bridge.runtime.store.inbox_pending(0, 10) == []
        status, _, _ = await bridge.call("GET", "/healthz")
        assert status == 200


async def test_a_trickling_body_is_cut_at_the_deadline(tmp_path: Path) -> None:
    async for bridge in running(tmp_path):
        before = bridge.connections()
        reader, writer = await _open(bridge)
        writer.write(
            b"POST /v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        )
        answered = asyncio.ensure_future(_answer(reader))
        sent = 0
        while not answered.done() and sent < 3000:  # one byte every 20 ms: a slowloris
            try:
                writer.write(b" ")
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            await asyncio.sleep(0.02)
        try:
            status, _, closed = await answered
        except ConnectionResetError:
            # The server closed with our last bytes unread: the kernel resets instead of
            # closing, and may drop the 408 already on its way. Either way it cut us off.
            status, closed = 408, True
        writer.close()
        assert (status, closed) == (408, True)
        assert sent < 3000  # cut long before the body could have finished
        for _ in range(100):
            if bridge.connections() <= before:
                break
            await asyncio.sleep(0.02)
        assert bridge.connections() <= before


async def test_headers_that_never_finish_are_dropped_after_idle_timeout(tmp_path: Path) -> None:
    async for bridge in running(tmp_path):
        reader, writer = await _open(bridge)
        writer.write(b"POST /v1/events HTTP/1.1\r\nHost: localhost\r\n")  # no blank line, ever
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 15)  # idle_timeout is 2 s
        writer.close()
        assert rest == b""  # closed by the server without an answer
        status, _, _ = await bridge.call("GET", "/healthz")
        assert status == 200


def test_loopback_rule() -> None:
    from bridge.admission import loopback

    assert [loopback(a) for a in ("127.0.0.1", "127.8.0.1", "::1", "::ffff:127.0.0.1")] == [
        True
    ] * 4
    assert [loopback(a) for a in ("192.0.2.2", "::ffff:10.0.0.1", "fd00::2", "", None, "x")] == [
        False
    ] * 6


def test_admin_config_defaults() -> None:
    cfg = load_config_text("version: 1\nstore: memory://\n", {})
    assert (cfg.server.admin.token, cfg.server.admin.local_only, cfg.server.admin.metrics) == (
        None,
        False,
        False,
    )
    assert (cfg.server.body_timeout, cfg.server.idle_timeout) == (30.0, 75.0)
