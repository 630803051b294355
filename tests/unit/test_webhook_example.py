"""examples/db-changes runs as documented: its sample webhooks reach every handler,
the http ones through the example application on a real local port."""

from __future__ import annotations

import asyncio
import base64
import importlib
from pathlib import Path

import pytest
from aiohttp import web

from bridge.app import load_config
from bridge.app.runtime import Runtime
from tests.support import ROOT, free_port

EXAMPLE = ROOT / "examples" / "db-changes"


async def test_db_changes_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app_port, bridge_port = free_port(), free_port()
    env = {
        "SUPABASE_WEBHOOK_SECRET": "supabase-secret",
        "DEBEZIUM_WEBHOOK_KEY": "whsec_" + base64.b64encode(b"example-signing-key").decode(),
        "APP_TOKEN": "app-token",
        "APP_URL": f"http://127.0.0.1:{app_port}",
        "BRIDGE_STORE": f"sqlite:///{tmp_path / 'state.db'}",
        "BRIDGE_LISTEN": f"127.0.0.1:{bridge_port}",
        "BRIDGE_URL": f"http://127.0.0.1:{bridge_port}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = load_config(EXAMPLE / "bridge.yaml")  # puts the example's directory on sys.path
    sidecar_app = importlib.import_module("sidecar_app")
    send_samples = importlib.import_module("send_samples")

    app = sidecar_app.make_app("app-token")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", app_port).start()
    runtime = Runtime(cfg)
    task = asyncio.create_task(runtime.run())
    try:
        while not runtime.ready:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        await send_samples.main()
        for _ in range(500):
            entries = await runtime.store.ledger_entries()
            if len(entries) == 6:
                break
            await asyncio.sleep(0.02)
        runs = sorted((e.handler, e.status) for e in entries)
        assert runs == [
            ("audit-log", "succeeded"),
            ("audit-log", "succeeded"),
            ("cache-invalidation", "succeeded"),
            ("search-index", "succeeded"),
            ("search-index", "succeeded"),
            ("welcome-new-user", "succeeded"),
        ]
        results = {e.handler: e.result for e in entries if e.handler != "audit-log"}
        assert results["welcome-new-user"] == {"queued": "ada@example.com"}
        assert results["cache-invalidation"]["by"] == "cache"
        assert dict(app[sidecar_app.RECEIVED]) == {"search-index": 2, "cache": 1}
        assert await runtime.store.dead_letters() == []
    finally:
        runtime.request_stop()
        await task
        await runner.cleanup()
