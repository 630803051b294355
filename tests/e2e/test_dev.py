"""`bridge dev`: embedded Kafka (Tansu) and SQS (moto) when none is reachable, every URL
printed, the UI on, and a reload that picks up a changed handler module."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from bridge.embedded import reachable
from tests.support import ROOT, answers_200, free_port, read_lines, until

CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{listen: "127.0.0.1:{port}"}}
defaults: {{retry: {{attempts: 1}}}}
events:
  note/added: {{schema: none}}
connectors:
  stream:
    type: kafka
    bootstrap_servers: ["127.0.0.1:{kafka_port}"]
    consume:
      topics: [notes]
      group_id: dev-notes
      start_from: earliest
      session_timeout: 2s
      heartbeat_interval: 500ms
      event: {{type: note/added}}
  jobs:
    type: sqs
    endpoint_url: http://127.0.0.1:{sqs_port}
    region: us-east-1
    consume: {{queue: dev-jobs, wait_time_seconds: 1, event: {{type: note/added}}}}
handlers:
  - {{id: keep, on: note/added, type: python, function: "devapp:keep"}}
"""

APP = """\
import os

VERSION = "{version}"


async def keep(event, ctx):
    with open(os.environ["DEV_RECORD"], "a") as fh:
        fh.write(f"{{VERSION}} {{event.id}}\\n")
"""


def start_dev(config: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "dev", "-c", str(config)],
            cwd=config.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.e2e
async def test_dev_mode_embeds_brokers_prints_urls_and_reloads_handlers(tmp_path: Path) -> None:
    port, kafka_port, sqs_port = free_port(), free_port(), free_port()
    config = tmp_path / "bridge.yaml"
    config.write_text(
        CONFIG.format(db=tmp_path / "s.db", port=port, kafka_port=kafka_port, sqs_port=sqs_port)
    )
    app = tmp_path / "devapp.py"
    app.write_text(APP.format(version="v1"))
    record = tmp_path / "record.txt"
    log_path = tmp_path / "dev.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEV_RECORD": str(record)}
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name, None)
    proc = start_dev(config, env, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(log_path.read_text())
                return await answers_200(f"{url}/readyz", session)

            await until(ready, 60, "bridge dev ready with both embedded brokers")
            text = log_path.read_text()
            for line in [
                f"UI                     {url}/ui",
                f"event API              POST {url}/v1/events",
                f"metrics                {url}/metrics",
                f"embedded Kafka (Tansu)  127.0.0.1:{kafka_port}",
                f"embedded SQS (moto)    http://127.0.0.1:{sqs_port}",
            ]:
                assert " ".join(line.split()) in " ".join(text.split()), text
            async with session.get(f"{url}/ui") as resp:
                assert resp.status == 200  # the UI is on in dev mode

            # A message through the embedded Kafka reaches the handler.
            producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{kafka_port}")
            await producer.start()
            try:
                await producer.send_and_wait("notes", b'{"text": "hello"}')
            finally:
                await producer.stop()
            await until(lambda: len(read_lines(record)) == 1, 30, "the Kafka message handled")
            assert read_lines(record)[0].startswith("v1 ")

            # Editing the handler module reloads it; the next event runs the new code.
            await asyncio.sleep(1.1)  # a distinct mtime on coarse file systems
            app.write_text(APP.format(version="v2"))
            await until(
                lambda: "devapp.py changed; reloading" in log_path.read_text(), 20, "reload"
            )
            await until(ready, 30, "ready again after the reload")
            async with session.get(f"{url}/ui") as resp:  # the reloaded server's CSRF token
                page = await resp.text()
            token = page.split('name="bridge-csrf" content="', 1)[1].split('"', 1)[0]
            async with session.post(
                f"{url}/ui/api/send",
                json={"type": "note/added", "data": {}, "id": "after"},
                headers={"X-CSRF-Token": token},
            ) as resp:
                assert resp.status == 202
            await until(lambda: "v2 after" in read_lines(record), 20, "the new handler code ran")
            assert read_lines(record) == [read_lines(record)[0], "v2 after"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0, log_path.read_text()[-3000:]
    # The embedded brokers stopped with it.
    assert not reachable("127.0.0.1", kafka_port) and not reachable("127.0.0.1", sqs_port)


@pytest.mark.e2e
async def test_dev_mode_shows_a_config_error_and_recovers_when_it_is_fixed(
    tmp_path: Path,
) -> None:
    port = free_port()
    good = f'version: 1\nstore: memory://\nserver: {{listen: "127.0.0.1:{port}"}}\n'
    config = tmp_path / "bridge.yaml"
    config.write_text(good + "handlers:\n  - {id: h, on: x/y, type: log, retyr: 3}\n")
    log_path = tmp_path / "dev.log"
    proc = start_dev(config, {**os.environ, "PYTHONPATH": str(ROOT)}, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        await until(lambda: "handlers[0].retyr: unknown key" in log_path.read_text(), 30, "error")
        assert proc.poll() is None  # it waits for a fix instead of exiting
        async with aiohttp.ClientSession() as session:
            # The server stays up and shows the error: on the UI page, and as JSON.
            await until(lambda: answers_200(f"{url}/ui", session), 30, "the error page")
            async with session.get(f"{url}/ui") as resp:
                page = await resp.text()
            assert "The bridge is not running: 1 error in" in page, page
            assert "bridge.yaml:5: handlers[0].retyr: unknown key" in page, page
            for path, status in (("/readyz", 503), ("/healthz", 200), ("/ui/api/status", 503)):
                async with session.get(f"{url}{path}") as resp:
                    assert resp.status == status, path
                    body = await resp.json()
                assert body["status"] == "config_error", body
                assert any("handlers[0].retyr: unknown key" in e for e in body["errors"]), body
            async with session.post(f"{url}/v1/events", json={}) as resp:
                assert resp.status == 503  # nothing is taken in while the config is broken
        await asyncio.sleep(1.1)
        config.write_text(good + "handlers:\n  - {id: h, on: x/y, type: log}\n")
        async with aiohttp.ClientSession() as session:
            await until(
                lambda: answers_200(f"{url}/ui/api/status", session),
                30,
                "the bridge serving the fixed config",
            )
        # Console logs for humans, not JSON lines.
        assert any(" INFO    bridge.runtime" in line for line in log_path.read_text().splitlines())
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0
