"""Fuzz target: the event API (``POST /v1/events``) of a real runtime on a real port.

Requests are written byte for byte (tests.chaos.fuzz_inputs.RawHTTP): valid
CloudEvents (single, batch, binary mode), unknown types, wrong data types,
truncated and deeply nested JSON, invalid UTF-8, bodies over the limit, empty
bodies, missing, wrong and duplicated tokens, and noise headers (duplicated,
non-ASCII, a garbage correlation id or traceparent). Every answer is one of the
documented statuses, never a 5xx; where the input decides the status (no token:
401, over the limit: 413, ...) it is that one; every event answered 202 reaches
its handler.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from tests.chaos.fuzz_inputs import (
    FUZZ_TIMEOUT,
    HTTP_EXAMPLES,
    LoopThread,
    RawHTTP,
    Tally,
    broken,
    deeply_nested,
    fuzz_settings,
    header_names,
    header_values,
    huge_string,
    json_values,
    mutated,
)
from tests.chaos.fuzz_inputs import (
    hostile as is_hostile,
)
from tests.support import free_port, until

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(FUZZ_TIMEOUT)]

TOKEN = "api-T0ken-fuzz"
LIMIT = 8192
SEEN: set[str] = set()

CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:{port}", api: {{token: {token}}}}}
limits: {{max_body_bytes: {limit}}}
defaults: {{retry: {{attempts: 1}}}}
events:
  order/placed: {{schema: "tests.chaos.test_fuzz_event_api:Order"}}
  note/*: {{schema: none}}
handlers:
  - id: keep
    on: ["order/placed", "note/*"]
    type: python
    function: "tests.chaos.test_fuzz_event_api:remember"
"""


class Order(BaseModel):
    order_id: int
    total: float


async def remember(event: Any, ctx: Any) -> None:
    SEEN.add(event.id)


def order(event_id: str, n: int = 1) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "fuzz",
        "type": "order/placed",
        "data": {"order_id": n, "total": 2.5},
    }


ids = st.text("abcdef0123456789", min_size=1, max_size=6)  # small: repeats are duplicates
valid_events = st.builds(order, ids, st.integers(0, 1000))
unknown_types = st.text(max_size=20).filter(
    lambda t: t != "order/placed" and not t.startswith("note/")
)
MUTATED_EVENTS = mutated(valid_events)
BROKEN_EVENTS = broken(valid_events.map(orjson.dumps))
HUGE = huge_string(LIMIT)
BATCHES = st.lists(valid_events, min_size=1, max_size=4)
NOISE = st.lists(
    st.tuples(
        header_names | st.sampled_from(["x-correlation-id", "traceparent", "content-type"]),
        header_values,
    ),
    max_size=4,
)
AUTH = ["ok", "ok", "ok", "ok", "missing", "wrong", "garbage", "dup_ok_first", "dup_wrong_first"]
KINDS = [
    "single", "batch", "binary", "unknown_type", "wrong_types", "broken",
    "nested", "huge", "garbage", "empty", "json",
]  # fmt: skip
# Headers the noise must not set: framing, and what the request itself controls.
RESERVED = ("authorization", "content-length", "transfer-encoding", "host", "connection",
            "expect", "content-encoding", "ce-", "ce_", "cloudevents")  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[tuple[Any, Any]], bytes, str, bool, bool]:
    """(headers, body, kind, authorized, unsure): ``unsure`` when the HTTP parser may
    refuse the headers, or added attributes may take an event over the limit."""
    kind = draw(st.sampled_from(KINDS))
    headers: list[tuple[Any, Any]] = [("Content-Type", "application/json")]
    if kind == "single":
        body = orjson.dumps(draw(valid_events))
    elif kind == "batch":
        body = orjson.dumps(draw(BATCHES))
        headers = [("Content-Type", "application/cloudevents-batch+json")]
    elif kind == "binary":
        headers.append(("ce-type", draw(st.sampled_from(["order/placed", "note/x"]))))
        if draw(st.booleans()):
            headers.append(("ce-id", draw(ids)))
        body = orjson.dumps({"order_id": draw(st.integers(0, 9)), "total": 1.0})
    elif kind == "unknown_type":
        body = orjson.dumps({**draw(valid_events), "type": draw(unknown_types)})
    elif kind == "wrong_types":
        body = orjson.dumps(draw(MUTATED_EVENTS))
    elif kind == "broken":
        body = draw(BROKEN_EVENTS)
    elif kind == "nested":
        body = draw(deeply_nested())
    elif kind == "huge":
        body = draw(HUGE)
    elif kind == "garbage":
        body = draw(st.binary(max_size=300))
    elif kind == "empty":
        body = b""
    else:
        body = orjson.dumps(draw(json_values()))
    auth = draw(st.sampled_from(AUTH))
    right, wrong = f"Bearer {TOKEN}", f"Bearer {TOKEN[:-1]}"
    authorized = auth in ("ok", "dup_ok_first")
    if auth == "ok":
        headers.append(("Authorization", right))
    elif auth == "wrong":
        headers.append(("Authorization", wrong))
    elif auth == "garbage":
        headers.append(("Authorization", draw(header_values)))
    elif auth == "dup_ok_first":
        headers += [("Authorization", right), ("Authorization", wrong)]
    elif auth == "dup_wrong_first":
        headers += [("Authorization", wrong), ("Authorization", right)]
    noise = draw(NOISE)
    noise = [(n, v) for n, v in noise if not n.lower().startswith(RESERVED)]
    headers += noise
    hostile = is_hostile(headers)
    # The correlation id and traceparent headers become attributes of each stored event:
    # near the limit they make it too large to store (413).
    grows = sum(len(v) for n, v in noise if n.lower() in ("x-correlation-id", "traceparent"))
    if len(body) + grows > LIMIT - 300:
        hostile = True
    return headers, body, kind, authorized, hostile


EXACT = {"single": 202, "batch": 202, "binary": 202, "unknown_type": 422, "nested": 400,
         "huge": 400, "empty": 400}  # fmt: skip
ALLOWED = {202, 400, 401, 413, 422}


def test_fuzz_event_api(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)  # one warning per refused request would pile up in memory
    SEEN.clear()
    loop = LoopThread()
    port = free_port()
    text = CONFIG.format(db=tmp_path / "s.db", port=port, token=TOKEN, limit=LIMIT)

    async def start() -> tuple[Runtime, asyncio.Task[None]]:
        runtime = Runtime(load_config_text(textwrap.dedent(text), {}))
        task = asyncio.create_task(runtime.run())
        while runtime.server is None or not runtime.ready:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        return runtime, task

    runtime, task = loop.run(start())
    client = RawHTTP("127.0.0.1", port)
    tally = Tally("fuzz_event_api")
    accepted: set[str] = set()
    answered_202 = 0

    @fuzz_settings(HTTP_EXAMPLES)
    @given(request=requests())
    def check(request: tuple[list[tuple[Any, Any]], bytes, str, bool, bool]) -> None:
        nonlocal answered_202
        headers, body, kind, authorized, hostile = request
        status, _, raw = loop.run(client.request("POST", "/v1/events", headers, body))
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        tally.count(status)
        assert status < 500, (status, raw, kind, headers, body[:200])
        if answer is None:  # only aiohttp's HTTP parser answers in plain text: bad header bytes
            assert status == 400 and hostile, (status, raw, headers)
            return
        assert status in ALLOWED, (status, answer, kind)
        if status != 202:
            assert isinstance(answer.get("error"), str) and answer["error"]
        if not authorized:
            assert status == 401, (status, answer, headers)
        elif len(body) > LIMIT:
            assert status == 413, (status, answer)
        elif kind in EXACT and not hostile:
            assert status == EXACT[kind], (status, answer, kind, headers, body[:200])
        if status == 202:
            answered_202 += 1
            assert set(answer["accepted"]) | set(answer["duplicates"]) == set(answer["ids"])
            accepted.update(answer["accepted"])

    async def delivered() -> bool:
        return accepted <= SEEN

    async def healthy() -> int:
        status, _, _ = await client.request("GET", "/healthz", [], b"")
        return status

    def error_logs() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name.startswith("bridge")]

    async def undelivered() -> list[dict[str, Any]]:
        """What became of accepted events the handler never saw (dead letter, still pending)."""
        out = []
        for event_id in sorted(accepted - SEEN)[:50]:
            letters = await runtime.store.dead_letters(event_id=event_id, limit=5)
            out.append({"id": event_id, "dead_letters": [d.reason for d in letters]})
        pending = await runtime.store.inbox_pending(0, 100)
        return [*out, {"inbox_pending": [(e.id, e.body[:300].decode()) for e in pending[:20]]}]

    missing: list[dict[str, Any]] = []
    try:
        check()
        try:
            loop.run(until(delivered, 120, "every accepted event reached its handler", every=0.05))
        except AssertionError:
            missing = loop.run(undelivered())
            raise AssertionError(f"accepted but not delivered: {missing}") from None
        assert loop.run(healthy()) == 200
    finally:
        tally.report.delivered = len(accepted & SEEN)
        tally.report.lost = len(accepted - SEEN)
        tally.write(
            accepted_events=len(accepted),
            answered_202=answered_202,
            error_logs=error_logs(),
            undelivered=missing,
        )
        loop.run(client.close())
        runtime.request_stop()
        loop.run(asyncio.wait_for(task, 60))
        loop.close()
    assert error_logs() == []
    assert tally.outcomes["202"] > 0 and tally.outcomes["401"] > 0 and tally.outcomes["400"] > 0
