"""Readiness that fits the sidecar: ``readiness.connectors`` names the connectors whose
health makes /readyz fail (``all``, ``none`` or a list), over real HTTP to a running bridge
with one RabbitMQ connector on the local broker and one on a closed port.

* ``all`` (the default): /readyz is 503 while the unreachable connector is down;
* ``none``: /readyz is 200, and its details (and /metrics) still show it down;
* ``[up]``: only the named connector counts, so 200; ``[down]``: 503;
* the store always counts, and /healthz (liveness) never depends on a connector.
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from bridge.errors import ConfigError
from tests.support import free_port, rabbitmq_connector

pytestmark = pytest.mark.integration

RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"


def closed_port() -> int:
    return free_port()  # nothing listens there


def config(tmp_path: Path, port: int, readiness: Any) -> str:
    queue = f"readiness-{uuid.uuid4().hex[:8]}"
    cfg: dict[str, Any] = {
        "version": 1,
        "store": f"sqlite:///{tmp_path}/state.db",
        "server": {"listen": f"127.0.0.1:{port}"},
        "drain_timeout": "2s",
        "events": {"test/*": {"schema": "none"}},
        "connectors": {
            "up": rabbitmq_connector(RABBITMQ, queue, declare={}),
            "down": rabbitmq_connector(
                f"amqp://guest:guest@127.0.0.1:{closed_port()}/", queue, declare={}
            ),
        },
        "handlers": [{"id": "log", "on": "test/*", "type": "log"}],
    }
    if readiness is not None:
        cfg["readiness"] = {"connectors": readiness}
    return yaml.safe_dump(cfg)


@asynccontextmanager
async def running(tmp_path: Path, readiness: Any) -> AsyncIterator[str]:
    port = free_port()
    runtime = Runtime(load_config_text(config(tmp_path, port, readiness), {}))
    task = asyncio.create_task(runtime.run())
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                if task.done():
                    task.result()
                try:
                    async with session.get(f"{url}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
            # Until the good connector is up: then only `down` is down.
            for _ in range(300):
                async with session.get(f"{url}/readyz") as resp:
                    body = await resp.json()
                if body["connectors"].get("up", {}).get("connected"):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"connector `up` never connected: {body}")
        yield url
    finally:
        runtime.request_stop()
        await asyncio.wait_for(task, 30)


async def probe(url: str) -> tuple[int, dict[str, Any], int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/readyz") as resp:
            ready_status, body = resp.status, await resp.json()
        async with session.get(f"{url}/healthz") as resp:
            live_status = resp.status
        async with session.get(f"{url}/metrics") as resp:
            metrics = await resp.text()
    return ready_status, body, live_status, metrics


@pytest.mark.parametrize(
    ("readiness", "expected"),
    [(None, 503), ("all", 503), ("none", 200), (["up"], 200), (["down"], 503)],
)
async def test_readiness_counts_only_the_named_connectors(
    tmp_path: Path, readiness: Any, expected: int
) -> None:
    async with running(tmp_path, readiness) as url:
        # Stays so: sampled a few times, the broker is retried every 500 ms meanwhile.
        for _ in range(5):
            status, body, live, _ = await probe(url)
            assert status == expected, body
            assert body["ready"] is (expected == 200)
            assert live == 200  # liveness never depends on a connector
            assert body["store"] == {"ok": True}
            assert body["connectors"]["up"]["connected"] is True
            assert body["connectors"]["down"]["connected"] is False  # shown whatever counts
            await asyncio.sleep(0.3)


def test_readiness_names_must_be_connectors(tmp_path: Path) -> None:
    text = config(tmp_path, free_port(), ["up", "missing"])
    with pytest.raises(ConfigError, match="missing"):
        load_config_text(text, {})
    with pytest.raises(ConfigError):
        load_config_text(config(tmp_path, free_port(), "some"), {})


def test_readiness_default_is_all() -> None:
    cfg = load_config_text(textwrap.dedent("version: 1\nstore: memory://\n"), {})
    assert cfg.readiness.connectors == "all"
