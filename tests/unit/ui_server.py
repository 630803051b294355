"""The bridge's real server for a config, with its store open and no sources running:
what the UI's API tests call over HTTP."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.server import Server


@asynccontextmanager
async def ui_server(text: str) -> AsyncIterator[tuple[TestClient[Any, Any], Runtime]]:
    """A test client of the server built from config ``text``, and its runtime."""
    runtime = Runtime(load_config_text(textwrap.dedent(text), {}))
    runtime.build()
    await runtime.store.open()
    client = TestClient(TestServer(Server(runtime).app))
    await client.start_server()
    try:
        yield client, runtime
    finally:
        await client.close()
        await runtime.store.close()
