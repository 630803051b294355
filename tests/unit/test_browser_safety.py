"""A local bridge is safe from the browser next to it: requests sent as a web page in the
user's browser would send them, over real HTTP to a real runtime with no tokens.

* the event API takes only JSON and CloudEvents content types (binary mode with ``ce-``
  headers carries any): a structured CloudEvent as ``text/plain``, a form or multipart
  (what a page can send cross-site without a preflight) is 415 and nothing is stored;
* a request that may change state from another site (``Sec-Fetch-Site: cross-site``, an
  ``Origin`` that is not the bridge's) is 403 and changes nothing;
* the UI's actions need the page's CSRF token;
* a ``Host`` that is not loopback, an IP literal, the listen host or in
  ``server.allowed_hosts`` is 403 (DNS rebinding), except on /healthz, /readyz, /metrics;
* what must keep working does: curl-like clients, ``bridge send``, webhooks from a
  provider, Kubernetes probes by pod IP.
"""

from __future__ import annotations

import asyncio
import re
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from tests.support import ROOT, free_port

CONFIG = """\
version: 1
store: sqlite:///{db}
server:
  listen: "127.0.0.1:{port}"
  ui: {{enabled: true}}
  allowed_hosts: [bridge, .svc.cluster.local]
defaults: {{retry: {{attempts: 1}}}}
events:
  note/*: {{schema: none}}
connectors:
  hook:
    type: webhook
    provider: json
    event: {{type: "note/{{data.kind}}"}}
handlers:
  - {{id: fail, on: "note/fail", type: python, function: "tests.unit.test_security:fail"}}
  - {{id: log, on: "note/ok", type: log}}
"""

EVENT = {"specversion": "1.0", "type": "note/ok", "source": "page", "data": {"email": "a@b"}}


class Bridge:
    def __init__(self, runtime: Runtime, port: int, session: aiohttp.ClientSession) -> None:
        self.runtime = runtime
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.session = session

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, f"{self.url}{path}", **kw) as resp:
            text = await resp.text()
            try:
                return resp.status, orjson.loads(text)
            except orjson.JSONDecodeError:
                return resp.status, text


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    port = free_port()
    text = CONFIG.format(db=tmp_path / "s.db", port=port)
    runtime = Runtime(load_config_text(textwrap.dedent(text), {}))
    task = asyncio.create_task(runtime.run())
    async with aiohttp.ClientSession() as session:
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


async def taken_in(bridge: Bridge, refused: str) -> bool:
    """Whether the event ``refused`` reached the run history, once a control event sent
    after it (as curl would) has: the history records every event the bridge took in."""
    control = f"control-{refused}"
    status, _ = await bridge.call("POST", "/v1/events", json={**EVENT, "id": control})
    assert status == 202
    for _ in range(250):
        if await bridge.runtime.store.history_event(control) is not None:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the control event never reached the history")
    return await bridge.runtime.store.history_event(refused) is not None


async def dead_letter(bridge: Bridge) -> str:
    status, body = await bridge.call(
        "POST", "/v1/events", json={**EVENT, "id": "f-1", "type": "note/fail"}
    )
    assert status == 202, body
    for _ in range(250):
        letters = await bridge.runtime.store.dead_letters(limit=10)
        if letters:
            return letters[0].id
        await asyncio.sleep(0.02)
    raise AssertionError("no dead letter")


async def csrf_token(bridge: Bridge) -> str:
    status, page = await bridge.call("GET", "/ui")
    assert status == 200
    match = re.search(r'<meta name="bridge-csrf" content="([^"]+)">', page)
    assert match is not None, page[:300]
    return match.group(1)


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",  # what fetch(url, {method: "POST", body: string}) sends
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,  # a Blob body without a type: no Content-Type header at all
    ],
)
async def test_a_simple_request_body_is_415_and_nothing_is_stored(
    bridge: Bridge, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    body = orjson.dumps({**EVENT, "id": "simple-1"})
    async with bridge.session.post(
        f"{bridge.url}/v1/events", data=body, headers=headers, skip_auto_headers=["Content-Type"]
    ) as resp:
        assert resp.status == 415
        answer = await resp.json()
    assert "application/cloudevents+json" in answer["error"]
    assert not await taken_in(bridge, "simple-1")


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents+json; charset=utf-8",
    ],
)
async def test_json_and_cloudevents_types_are_accepted(bridge: Bridge, content_type: str) -> None:
    status, body = await bridge.call(
        "POST",
        "/v1/events",
        data=orjson.dumps({**EVENT, "id": f"ok-{content_type}"}),
        headers={"Content-Type": content_type},
    )
    assert status == 202 and body["accepted"] == [f"ok-{content_type}"]
    status, body = await bridge.call(
        "POST",
        "/v1/events",
        data=orjson.dumps([{**EVENT, "id": "batch-1"}]),
        headers={"Content-Type": "application/cloudevents-batch+json"},
    )
    assert status == 202 and body["accepted"] == ["batch-1"]


async def test_binary_mode_carries_any_content_type(bridge: Bridge) -> None:
    for content_type, data in (("text/plain", b"hello"), ("application/octet-stream", b"\x00\x01")):
        status, body = await bridge.call(
            "POST",
            "/v1/events",
            data=data,
            headers={"Content-Type": content_type, "ce-specversion": "1.0", "ce-type": "note/ok"},
        )
        assert status == 202, body


# --------------------------------------------------------------------------- cross-site


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"},
        {"Origin": "https://evil.example"},  # an older browser: Origin only
        {"Origin": "null"},  # a sandboxed frame
    ],
)
async def test_cross_site_requests_that_change_state_are_403(
    bridge: Bridge, headers: dict[str, str]
) -> None:
    letter = await dead_letter(bridge)
    json_type = {"Content-Type": "application/json", **headers}
    # The event API, even with a JSON type (sent with no-cors it never gets that far in a
    # real browser; the check does not rely on it).
    status, body = await bridge.call(
        "POST", "/v1/events", data=orjson.dumps({**EVENT, "id": "x-1"}), headers=json_type
    )
    assert status == 403 and "cross-site request refused" in body["error"], body
    # The dead-letter API and the UI's actions.
    for path in (f"/v1/dead-letters/{letter}/discard", f"/v1/dead-letters/{letter}/replay"):
        status, body = await bridge.call("POST", path, headers=headers)
        assert status == 403 and "cross-site" in body["error"], (path, body)
    token = await csrf_token(bridge)
    status, body = await bridge.call(
        "POST",
        "/ui/api/send",
        json={"type": "note/ok", "data": {}, "id": "x-2"},
        headers={**headers, "X-CSRF-Token": token},
    )
    assert status == 403, body
    # A webhook too: providers send neither header.
    status, body = await bridge.call("POST", "/hooks/hook", json={"kind": "ok"}, headers=headers)
    assert status == 403, body
    # Nothing changed.
    stored = await bridge.runtime.store.dead_letter_get(letter)
    assert stored is not None and stored.status == "pending"
    assert not await taken_in(bridge, "x-1")
    assert await bridge.runtime.store.history_event("x-2") is None
    # Reading stays allowed: a cross-site page cannot read the answer without CORS.
    status, _ = await bridge.call("GET", "/v1/dead-letters", headers=headers)
    assert status == 200


async def test_same_origin_and_non_browser_clients_pass(bridge: Bridge) -> None:
    for headers in (
        {},  # curl, an SDK, the app next to a sidecar
        {"Sec-Fetch-Site": "same-origin", "Origin": bridge.url},
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
        {"Origin": bridge.url},
    ):
        event_id = f"same-{len(headers)}-{'|'.join(headers.values())}"
        status, body = await bridge.call(
            "POST", "/v1/events", json={**EVENT, "id": event_id}, headers=headers
        )
        assert status == 202, (headers, body)
    status, body = await bridge.call("POST", "/hooks/hook", json={"kind": "ok"})
    assert status in (200, 202), body


# --------------------------------------------------------------------------- CSRF token


async def test_ui_actions_need_the_pages_csrf_token(bridge: Bridge) -> None:
    send = {"type": "note/ok", "data": {}, "id": "ui-1"}
    status, body = await bridge.call("POST", "/ui/api/send", json=send)
    assert status == 403 and "X-CSRF-Token" in body["error"]
    status, body = await bridge.call(
        "POST", "/ui/api/send", json=send, headers={"X-CSRF-Token": "guessed"}
    )
    assert status == 403
    letter = await dead_letter(bridge)
    status, _ = await bridge.call("POST", f"/ui/api/dead-letters/{letter}/discard")
    assert status == 403
    stored = await bridge.runtime.store.dead_letter_get(letter)
    assert stored is not None and stored.status == "pending"
    token = await csrf_token(bridge)
    status, body = await bridge.call(
        "POST", "/ui/api/send", json=send, headers={"X-CSRF-Token": token}
    )
    assert status == 202 and body == {"id": "ui-1", "duplicate": False}
    # Reads need no token.
    status, _ = await bridge.call("GET", "/ui/api/status")
    assert status == 200


# --------------------------------------------------------------------------- Host


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/dead-letters"),
        ("GET", "/ui"),
        ("GET", "/ui/api/events"),
        ("POST", "/v1/events"),
    ],
)
async def test_a_foreign_host_is_403(bridge: Bridge, method: str, path: str) -> None:
    """DNS rebinding: evil.example resolves to 127.0.0.1, so the page is same-origin with
    itself and sends Host: evil.example."""
    await dead_letter(bridge)
    headers = {"Host": f"evil.example:{bridge.port}", "Sec-Fetch-Site": "same-origin"}
    kw: dict[str, Any] = {"json": {**EVENT, "id": "rebound"}} if method == "POST" else {}
    status, body = await bridge.call(method, path, headers=headers, **kw)
    assert status == 403, body
    assert "evil.example" in body["error"] and "server.allowed_hosts" in body["error"]
    assert "a@b" not in str(body)


@pytest.mark.parametrize(
    "host",
    [
        "localhost", "localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}",
        "10.1.2.3:{port}",  # the kubelet or Prometheus by pod IP; any IP literal
        "bridge:{port}", "bridge.default.svc.cluster.local:{port}",  # server.allowed_hosts
    ],
)  # fmt: skip
async def test_loopback_ip_literals_and_allowed_hosts_pass(bridge: Bridge, host: str) -> None:
    status, body = await bridge.call(
        "GET", "/v1/dead-letters", headers={"Host": host.format(port=bridge.port)}
    )
    assert status == 200, body


async def test_probes_answer_any_host(bridge: Bridge) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _ = await bridge.call("GET", path, headers={"Host": "bridge-7f9c.internal"})
        assert status == 200, path
    status, _ = await bridge.call(
        "GET", "/v1/dead-letters", headers={"Host": "bridge-7f9c.internal"}
    )
    assert status == 403


async def test_bridge_send_still_works(bridge: Bridge) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "send",
        "note/ok",
        "--data",
        '{"x": 1}',
        "--id",
        "cli-1",
        "--url",
        bridge.url,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out, err)
    assert orjson.loads(out)["accepted"] == ["cli-1"]


def test_allowed_hosts_are_names() -> None:
    from bridge.config.models import ServerConfig

    assert ServerConfig(allowed_hosts=["Bridge", ".Example.com"]).allowed_hosts == [
        "bridge",
        ".example.com",
    ]
    for bad in ("http://bridge", "bridge:8787", ""):
        with pytest.raises(ValueError, match="not a host name"):
            ServerConfig(allowed_hosts=[bad])
