"""``batch``: the handler gets a list of events, at ``max_size`` or at ``timeout``; the
ledger and dead letters stay per event; each message settles once its batch is final.
On the real dispatcher and a memory store; python and http (a real local server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from bridge import Context, Event, Fatal
from bridge.errors import ConfigError
from bridge.transport import Settlement
from tests.unit.test_dispatch import FakeClock, delivery, make, process

HERE = "tests.unit.test_batch"
BATCHES: list[list[str]] = []
FAIL: dict[str, int] = {}


async def takes_batch(events: list[Event[Any]], ctx: Context) -> dict[str, Any]:
    ids = [e.id for e in events]
    BATCHES.append(ids)
    if FAIL.get("sleep"):
        await ctx.sleep("nap", "1h")
    if FAIL.get("fatal"):
        raise Fatal("this batch cannot be taken")
    if FAIL.get("transient", 0) >= ctx.attempt:
        raise ConnectionError("the warehouse is down")
    return {"batch": ids[0], "size": len(ids)}


def takes_batch_sync(events: list[Event[Any]], ctx: Context) -> int:
    BATCHES.append([e.id for e in events])
    return len(events)


@pytest.fixture(autouse=True)
def _reset() -> None:
    BATCHES.clear()
    FAIL.clear()


def batching(
    max_size: int, timeout: str = "50ms", function: str = "takes_batch", **more: str
) -> Any:
    extra = "".join(f", {k}: {v}" for k, v in more.items())
    return make(
        f"""
        - id: b
          on: test/event
          type: python
          function: {HERE}:{function}
          batch: {{max_size: {max_size}, timeout: {timeout}{extra}}}
        """,
        FakeClock(),
    )


async def send_all(runtime: Any, ids: list[str], data: Any = None) -> list[Settlement]:
    return list(await asyncio.gather(*(process(runtime, delivery(i, data or {})[0]) for i in ids)))


async def test_full_batches_fire_at_max_size_and_the_rest_at_the_timeout() -> None:
    runtime, store, _ = batching(3)
    ids = [f"e{n}" for n in range(7)]
    assert await send_all(runtime, ids) == [Settlement.ACK] * 7
    assert sorted(len(b) for b in BATCHES) == [1, 3, 3]
    assert sorted(i for b in BATCHES for i in b) == ids  # each event in exactly one batch
    entries = await store.ledger_get([("b", f"t\x1f{i}") for i in ids])
    assert {k[1]: e.status for k, e in entries.items()} == {f"t\x1f{i}": "succeeded" for i in ids}
    first_of = {i: b[0] for b in BATCHES for i in b}
    assert {e.event_id: e.result["batch"] for e in entries.values()} == first_of
    # A redelivered event that succeeded in a batch is not batched again.
    assert await send_all(runtime, ["e0"]) == [Settlement.ACK]
    assert len(BATCHES) == 3


async def test_a_message_settles_only_once_its_batch_is_final() -> None:
    runtime, _, _ = batching(2, timeout="10s")
    first = asyncio.create_task(process(runtime, delivery("a")[0]))
    await asyncio.sleep(0.05)
    assert not first.done() and BATCHES == []  # waiting for a second event or the timeout
    assert await process(runtime, delivery("b")[0]) is Settlement.ACK
    assert await first is Settlement.ACK
    assert BATCHES == [["a", "b"]]


async def test_batches_are_kept_per_key() -> None:
    runtime, _, _ = batching(10, key="event.data.account")
    ids = [f"e{n}" for n in range(6)]
    await asyncio.gather(
        *(process(runtime, delivery(i, {"account": int(i[1:]) % 2})[0]) for i in ids)
    )
    assert sorted(sorted(b) for b in BATCHES) == [["e0", "e2", "e4"], ["e1", "e3", "e5"]]


async def test_a_failed_batch_dead_letters_each_event_on_its_own() -> None:
    runtime, store, _ = batching(3)
    FAIL["fatal"] = 1
    assert await send_all(runtime, ["x1", "x2", "x3"]) == [Settlement.ACK] * 3
    letters = await store.dead_letters()
    assert sorted(letter.event_id for letter in letters) == ["x1", "x2", "x3"]
    assert {letter.handler for letter in letters} == {"b"}
    assert all("cannot be taken" in letter.reason for letter in letters)
    counters = runtime.metrics.counters
    assert counters[("bridge_dead_letters_total", (("handler", "b"),))] == 3


async def test_a_batch_that_tries_to_sleep_is_dead_lettered_with_a_reason() -> None:
    runtime, store, _ = batching(2)
    FAIL["sleep"] = 1
    assert await send_all(runtime, ["z1", "z2"]) == [Settlement.ACK] * 2
    letters = await store.dead_letters()
    assert len(letters) == 2 and all("cannot sleep" in x.reason for x in letters)
    assert await store.parked_list() == []


async def test_a_batch_is_retried_as_a_whole() -> None:
    runtime, store, _ = batching(2)
    FAIL["transient"] = 1
    assert await send_all(runtime, ["r1", "r2"]) == [Settlement.ACK] * 2
    assert BATCHES == [["r1", "r2"], ["r1", "r2"]]
    assert await store.dead_letters() == []
    assert len(await store.ledger_final([("b", "t\x1fr1"), ("b", "t\x1fr2")])) == 2


async def test_a_sync_function_gets_the_list_in_its_thread() -> None:
    runtime, store, _ = batching(2, function="takes_batch_sync")
    await send_all(runtime, ["s1", "s2"])
    assert BATCHES == [["s1", "s2"]]
    entries = await store.ledger_get([("b", "t\x1fs1")])
    assert entries[("b", "t\x1fs1")].result == 2


def test_a_kind_that_cannot_take_batches_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot take batches"):
        make(
            """
            - {id: l, on: test/event, type: log, batch: {max_size: 2, timeout: 1s}}
            """
        )


@pytest.fixture
async def app() -> AsyncIterator[tuple[str, list[tuple[str, Any]]]]:
    got: list[tuple[str, Any]] = []

    async def take(request: web.Request) -> web.Response:
        got.append((request.headers["content-type"], orjson.loads(await request.read())))
        return web.json_response({"taken": len(got[-1][1])})

    web_app = web.Application()
    web_app.router.add_post("/batch", take)
    runner = web.AppRunner(web_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/batch", got
    await runner.cleanup()


async def test_the_http_handler_posts_a_cloudevents_json_batch(
    app: tuple[str, list[tuple[str, Any]]],
) -> None:
    url, got = app
    runtime, store, _ = make(
        f"""
        - id: b
          on: test/event
          type: http
          url: {url}
          batch: {{max_size: 3, timeout: 50ms}}
        """,
        FakeClock(),
    )
    try:
        await send_all(runtime, ["h1", "h2", "h3"], {"n": 1})
    finally:
        await runtime.handlers["b"].handler.close()
    [(content_type, body)] = got
    assert content_type == "application/cloudevents-batch+json"
    assert sorted(e["id"] for e in body) == ["h1", "h2", "h3"]
    assert all(e["specversion"] == "1.0" and e["data"] == {"n": 1} for e in body)
    entries = await store.ledger_get([("b", "t\x1fh2")])
    assert entries[("b", "t\x1fh2")].result == {"taken": 3}
