"""Regressions found by the fuzz targets (tests/chaos/test_fuzz_*.py), on a real runtime.

* a header value that is not UTF-8 (``x-correlation-id: \\x80``) was a 500 on the
  event API and a 503 on webhooks: the event could not be written as JSON;
* JSON nested deeper than orjson can write back was a 503 on webhooks;
* an event under the body limit that the correlation id header took over the limit
  once stored was answered 202, then dead-lettered by the inbox as too large.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bridge.normalize import MAX_JSON_DEPTH
from tests.unit.test_security import Bridge, _answer, running


async def raw_post(bridge: Bridge, path: str, headers: bytes, body: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n".encode()
        + headers
        + b"\r\n"
        + body
    )
    await writer.drain()
    status, answer, _ = await _answer(reader)
    writer.close()
    return status, answer


def event(**extra: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "e1", "type": "note/x", "source": "t", "data": {}, **extra}


@pytest.mark.parametrize(
    ("path", "auth"),
    [("/v1/events", b""), ("/hooks/hook", b"X-Webhook-Secret: hook-secret\r\n")],
)
async def test_a_header_that_is_not_utf8_is_kept_with_replacement_characters(
    tmp_path: Path, path: str, auth: bytes
) -> None:
    async for bridge in running(tmp_path):
        body = b'{"specversion": "1.0", "id": "e1", "type": "note/x", "source": "t", "kind": "x"}'
        headers = b"Content-Type: application/json\r\nX-Correlation-Id: c-\x80\xff\r\n" + auth
        status, answer = await raw_post(bridge, path, headers, body)
        assert status == 202, answer
        for _ in range(250):  # its handler always fails: the dead letter shows the event
            letters = await bridge.runtime.store.dead_letters(limit=5)
            if letters:
                break
            await asyncio.sleep(0.02)
        (letter,) = letters
        assert letter.event is not None and letter.event["correlationid"] == "c-\ufffd\ufffd"


async def test_json_too_deep_to_store_is_refused_not_503(tmp_path: Path) -> None:
    async for bridge in running(tmp_path):
        deep = b'{"kind": ' + b"[" * (MAX_JSON_DEPTH + 5) + b"]" * (MAX_JSON_DEPTH + 5) + b"}"
        hook = b"X-Webhook-Secret: hook-secret\r\n"
        status, answer = await raw_post(bridge, "/hooks/hook", hook, deep)
        assert status == 400 and b"too_deep" in answer, answer
        # In binary mode the envelope adds a level: data at the limit cannot be stored.
        data = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
        status, answer = await raw_post(bridge, "/v1/events", b"ce-type: note/x\r\n", data)
        assert status == 422 and b"too_deep" in answer, answer
        json_type = b"Content-Type: application/json\r\n"
        status, answer = await raw_post(bridge, "/v1/events", json_type, deep)
        assert status == 400 and b"too_deep" in answer, answer
        assert await bridge.runtime.store.inbox_pending(0, 10) == []


async def test_an_event_too_large_once_stored_is_413_not_202(tmp_path: Path) -> None:
    async for bridge in running(tmp_path):
        limit = bridge.runtime.cfg.limits.max_body_bytes
        import orjson

        body = orjson.dumps(event(data={"pad": "x" * (limit - 300)}))
        assert len(body) < limit
        headers = b"Content-Type: application/json\r\nX-Correlation-Id: " + b"c" * 400 + b"\r\n"
        status, answer = await raw_post(bridge, "/v1/events", headers, body)
        assert status == 413 and b"once stored" in answer, answer
        status, answer = await raw_post(
            bridge, "/v1/events", b"Content-Type: application/json\r\n", body
        )
        assert status == 202, answer


async def test_a_webhook_event_too_large_once_stored_is_413() -> None:
    import aiohttp
    from aiohttp import web

    from bridge.events import EventCatalog
    from bridge.transport import IngressEnv
    from connectors.webhook import WebhookConfig, WebhookIngress
    from tests.support import free_port

    stored: list[Any] = []

    async def accept(events: Any) -> list[bool]:
        stored.extend(events)
        return [True for _ in events]

    cfg = WebhookConfig.model_validate(
        {"type": "webhook", "provider": "json", "event": {"type": "app/x"}}
    )
    ingress = WebhookIngress(cfg, "raw", IngressEnv(accept, EventCatalog(), 4096))
    app = web.Application()
    app.router.add_routes(ingress.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}{ingress.path}"
    try:
        async with aiohttp.ClientSession() as session:
            body = b'{"pad": "' + b"y" * 1500 + b'"}'  # well under half the limit
            big = {"x-correlation-id": "c" * 3000}  # the event would be over 4096 bytes
            async with session.post(url, data=body, headers=big) as resp:
                assert resp.status == 413, await resp.text()
            async with session.post(url, data=body) as resp:
                assert resp.status == 202, await resp.text()
    finally:
        await runner.cleanup()
    assert len(stored) == 1
