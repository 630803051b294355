"""The ``http`` handler against a real application server on 127.0.0.1.

The app answers by path: each status class, ``Retry-After``, a body to keep, a
response slower than the timeout, a first failure then success; one handler
points at a closed port. Events go in through the bridge's event API; outcomes
are read from the ledger and the dead letters, attempts from the app's own
request log. The dispatcher's clock records retry delays instead of sleeping.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from handlers.http import _retry_after_seconds
from tests.support import free_port

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class App:
    """The application: answers by path and remembers every request."""

    requests: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        what = request.match_info["what"]
        body = await request.read()
        event_id = request.headers.get("ce-id") or orjson.loads(body).get("id")
        self.requests[event_id].append({"headers": dict(request.headers), "body": body})
        attempt = len(self.requests[event_id])
        if what == "slow":
            await asyncio.sleep(2.0)
            return web.Response(status=200)
        if what == "flaky":
            return web.json_response({"attempt": attempt}, status=500 if attempt == 1 else 200)
        if what in ("big", "huge"):  # answers over several TCP segments
            return web.json_response({"blob": "x" * (40_000 if what == "big" else 100_000)})
        if what == "pool":
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            await asyncio.sleep(0.05)
            self.in_flight -= 1
            return web.Response(status=204)
        status = int(what)
        if status == 200:
            return web.json_response({"ok": True, "id": event_id})
        if status == 201:
            return web.json_response({"created": event_id}, status=201)
        if status == 204:
            return web.Response(status=204)
        headers = {}
        if status == 429:
            headers["Retry-After"] = "7"
        if status == 503:
            later = datetime.now(UTC) + timedelta(seconds=120)
            headers["Retry-After"] = format_datetime(later, usegmt=True)
        return web.Response(status=status, text=f"answer {status} for {event_id}", headers=headers)


class RecordingClock:
    """The dispatcher's clock: real time, but retry waits are recorded, not slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0)


CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:{port}"}}
defaults:
  retry: {{attempts: 3, min_delay: 1s, max_delay: 2s, jitter: 0}}
  timeout: 300ms
  inline_retry_limit: 1h  # Retry-After waits are what this test watches: keep them inline
events:
  t/*: {{schema: none}}
handlers:
  - id: deliver
    on: "t/status"
    type: http
    url: "http://127.0.0.1:{app}/{{data.what}}"
    auth: {{value: "Bearer tok-123"}}
    headers: {{x-event-type: "{{type}}"}}
  - id: capped
    on: "t/capped"
    type: http
    retry: {{attempts: 2, min_delay: 1s, jitter: 0}}
    max_retry_after: 30s
    url: "http://127.0.0.1:{app}/503"
  - id: structured
    on: "t/structured"
    type: http
    mode: structured
    url: "http://127.0.0.1:{app}/200"
  - id: unreachable
    on: "t/closed"
    type: http
    url: "http://127.0.0.1:{closed}/nothing"
  - id: pooled
    on: "t/pool"
    type: http
    max_connections: 2
    timeout: 10s
    url: "http://127.0.0.1:{app}/pool"
"""

RETRIED = ("408", "429", "500", "503", "slow")
DEAD_AT_ONCE = ("400", "404", "409", "422")
SUCCEEDED = ("200", "201", "204", "flaky")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Runtime, App, RecordingClock, str]]:
    app = App()
    web_app = web.Application()
    web_app.router.add_post("/{what}", app.handle)
    runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    app_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", app_port).start()
    port = free_port()
    text = CONFIG.format(db=tmp_path / "s.db", port=port, app=app_port, closed=free_port())
    clock = RecordingClock()
    runtime = Runtime(load_config_text(textwrap.dedent(text), {}), clock=clock)
    task = asyncio.create_task(runtime.run())
    while not runtime.ready:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    yield runtime, app, clock, f"http://127.0.0.1:{port}"
    runtime.request_stop()
    await task
    await runner.cleanup()


async def send(url: str, events: list[dict[str, Any]]) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/events", json=events) as resp,
    ):
        assert resp.status == 202, await resp.text()


def event(event_id: str, type_: str, **data: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "test",
        "type": type_,
        "traceparent": TRACEPARENT,
        "correlationid": f"corr-{event_id}",
        "data": data,
    }


async def final(runtime: Runtime, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The final statuses of (handler, event id) pairs, events of source ``test``."""
    ledger_keys = [(h, f"test\x1f{i}") for h, i in keys]
    for _ in range(500):
        done = await runtime.store.ledger_final(ledger_keys)
        if len(done) == len(keys):
            return {(h, k.split("\x1f", 1)[1]): s for (h, k), s in done.items()}
        await asyncio.sleep(0.02)
    raise AssertionError(f"runs did not finish: {keys}")


async def test_outcomes_by_status_class(world: tuple[Runtime, App, RecordingClock, str]) -> None:
    runtime, app, clock, url = world
    whats = [*SUCCEEDED, *DEAD_AT_ONCE, *RETRIED]
    await send(url, [event(f"e-{w}", "t/status", what=w) for w in whats])
    await send(url, [event("e-closed", "t/closed"), event("e-capped", "t/capped")])
    keys = [("deliver", f"e-{w}") for w in whats]
    keys += [("unreachable", "e-closed"), ("capped", "e-capped")]
    outcome = await final(runtime, keys)

    attempts = {w: len(app.requests[f"e-{w}"]) for w in whats}
    assert {w: outcome[("deliver", f"e-{w}")] for w in whats} == {
        **dict.fromkeys(SUCCEEDED, "succeeded"),
        **dict.fromkeys((*DEAD_AT_ONCE, *RETRIED), "dead_lettered"),
    }
    assert attempts == {
        **dict.fromkeys(("200", "201", "204"), 1),
        "flaky": 2,
        **dict.fromkeys(DEAD_AT_ONCE, 1),
        **dict.fromkeys(RETRIED, 3),
    }
    assert outcome[("unreachable", "e-closed")] == "dead_lettered"

    letters = {d.event_id: d for d in await runtime.store.dead_letters(limit=100)}
    assert Counter(d.handler for d in letters.values()) == {
        "deliver": 9,
        "unreachable": 1,
        "capped": 1,
    }
    for w in (*DEAD_AT_ONCE, "408", "429", "500", "503"):
        letter = letters[f"e-{w}"]
        assert letter.detail == {"status": int(w), "body": f"answer {w} for e-{w}"}
        assert f"answered {w}" in letter.reason
    assert len(letters["e-400"].attempts) == 1
    assert len(letters["e-500"].attempts) == 3
    assert "timed out" in letters["e-slow"].reason
    assert len(letters["e-closed"].attempts) == 3
    assert "Cannot connect" in letters["e-closed"].reason

    results = {e.event_id: e.result for e in await runtime.store.ledger_entries()}
    assert results["e-200"] == {"ok": True, "id": "e-200"}
    assert results["e-201"] == {"created": "e-201"}
    assert results["e-204"] is None
    assert results["e-flaky"] == {"attempt": 2}

    # Retry waits: the policy's, or Retry-After when longer (429: 7 s; 503: an HTTP date
    # two minutes ahead, under max_retry_after's default of 300 s; `capped` allows 30 s).
    assert len(clock.sleeps) == 2 * len(RETRIED) + 2 + 1 + 1  # + closed's 2, flaky's, capped's
    waits = sorted(s for s in clock.sleeps if s > 2.0)
    assert waits[:3] == [7.0, 7.0, 30.0]
    assert all(118.0 <= s <= 120.0 for s in waits[3:]) and len(waits) == 5  # dates: whole seconds


async def test_request_shape_binary_and_structured(
    world: tuple[Runtime, App, RecordingClock, str],
) -> None:
    runtime, app, _, url = world
    await send(
        url,
        [
            event("b-1", "t/status", what="200"),
            event("s-1", "t/structured", n=1),
            event("big", "t/status", what="big"),
            event("huge", "t/status", what="huge"),
        ],
    )
    keys = [("deliver", "b-1"), ("structured", "s-1"), ("deliver", "big"), ("deliver", "huge")]
    assert set((await final(runtime, keys)).values()) == {"succeeded"}
    results = {e.event_id: e.result for e in await runtime.store.ledger_entries()}
    assert results["big"] == {"blob": "x" * 40_000}  # kept whole: under max_result_bytes
    assert results["huge"] is None  # over it: a success, but no result kept

    (binary,) = app.requests["b-1"]
    headers = {k.lower(): v for k, v in binary["headers"].items()}
    assert headers["ce-id"] == "b-1"
    assert headers["ce-type"] == "t/status"
    assert headers["ce-source"] == "test"
    assert headers["ce-specversion"] == "1.0"
    assert headers["content-type"] == "application/json"
    assert headers["traceparent"] == TRACEPARENT
    assert headers["x-correlation-id"] == "corr-b-1"
    assert headers["authorization"] == "Bearer tok-123"
    assert headers["x-event-type"] == "t/status"
    assert orjson.loads(binary["body"]) == {"what": "200"}

    (structured,) = app.requests["s-1"]
    headers = {k.lower(): v for k, v in structured["headers"].items()}
    assert headers["content-type"] == "application/cloudevents+json"
    assert "ce-id" not in headers
    envelope = orjson.loads(structured["body"])
    assert (envelope["id"], envelope["type"], envelope["data"]) == ("s-1", "t/structured", {"n": 1})


async def test_connection_pool_limit_and_close(
    world: tuple[Runtime, App, RecordingClock, str],
) -> None:
    runtime, app, _, url = world
    await send(url, [event(f"p-{n}", "t/pool") for n in range(12)])
    outcome = await final(runtime, [("pooled", f"p-{n}") for n in range(12)])
    assert set(outcome.values()) == {"succeeded"}
    assert app.most_in_flight == 2
    handler = runtime.handlers["pooled"].handler
    runtime.request_stop()
    for _ in range(200):
        if getattr(handler, "_session", None) is None:
            break
        await asyncio.sleep(0.02)
    assert handler._session is None  # type: ignore[attr-defined]


def test_retry_after_forms() -> None:
    assert _retry_after_seconds("120") == 120.0
    assert _retry_after_seconds(None) is None
    assert _retry_after_seconds("soon") is None
    assert _retry_after_seconds("-5") is None
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert _retry_after_seconds(past) == 0.0
