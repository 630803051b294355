"""The examples run as documented: `bridge run` on each, events sent with `bridge send`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support import ROOT, BridgeProcess


def bridge_send(
    config: Path, port: int, event_type: str, data: dict[str, object]
) -> subprocess.CompletedProcess[str]:
    """``bridge send`` as a user runs it."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "send",
            "-c",
            str(config),
            "--url",
            f"http://127.0.0.1:{port}",
            event_type,
            "--data",
            json.dumps(data),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def send(config: Path, port: int, event_type: str, data: dict[str, object]) -> dict[str, object]:
    proc = bridge_send(config, port, event_type, data)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


async def wait_for(url: str, predicate: object, within: float = 30.0) -> dict[str, object]:
    """Poll a JSON endpoint until ``predicate(body)`` holds."""
    async with aiohttp.ClientSession() as session:
        for _ in range(int(within / 0.1)):
            async with session.get(url) as resp:
                body = await resp.json()
            if predicate(body):  # type: ignore[operator]
                return body  # type: ignore[no-any-return]
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never satisfied the condition; last: {body}")


def runs(metrics: str, handler: str, outcome: str) -> float:
    needle = f'bridge_runs_total{{handler="{handler}",outcome="{outcome}"}} '
    for line in metrics.splitlines():
        if line.startswith(needle):
            return float(line[len(needle) :])
    return 0.0


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        return await resp.text()


@pytest.mark.e2e
async def test_newsletter_fans_one_signup_out_to_four_handlers(tmp_path: Path) -> None:
    config = ROOT / "examples" / "newsletter" / "bridge.yaml"
    bridge = BridgeProcess(config, tmp_path, env={"BRIDGE_STORE": f"sqlite:///{tmp_path}/n.db"})
    bridge.start()
    try:
        await bridge.wait_ready()
        send(
            config,
            bridge.port,
            "subscriber/created",
            {"email": "ada@example.com", "name": "Ada", "preferences": ["python"]},
        )
        send(
            config,
            bridge.port,
            "subscriber/created",
            {"email": "bob@example.com", "name": "Bob", "source": "test"},
        )
        for _ in range(100):
            text = await metrics_text(bridge.url)
            if runs(text, "send-welcome-email", "succeeded") == 2:
                break
            await asyncio.sleep(0.1)
        # Two signups: every handler ran for each, but filters keep analytics off the test
        # signup and preferences off the signup without any.
        assert runs(text, "send-welcome-email", "succeeded") == 2
        assert runs(text, "create-profile", "succeeded") == 2
        assert runs(text, "track-analytics", "succeeded") == 1
        assert runs(text, "setup-preferences", "succeeded") == 1
        # A bad signup is refused at the door with the schema's reason.
        proc = bridge_send(
            config, bridge.port, "subscriber/created", {"email": "nope", "name": "X"}
        )
        assert proc.returncode == 1 and "string_pattern_mismatch" in proc.stdout
    finally:
        assert bridge.terminate() == 0


@pytest.mark.e2e
async def test_bulk_reports_split_into_one_run_per_report(tmp_path: Path) -> None:
    config = ROOT / "examples" / "bulk-reports" / "bridge.yaml"
    bridge = BridgeProcess(config, tmp_path, env={"BRIDGE_STORE": f"sqlite:///{tmp_path}/r.db"})
    bridge.start()
    try:
        await bridge.wait_ready()
        ids = [f"r{i}" for i in range(20)] + ["missing-1"]
        send(
            config,
            bridge.port,
            "reports/generate-bulk",
            {"batch_id": "b1", "report_ids": ids, "requested_by": "ada"},
        )
        for _ in range(200):
            text = await metrics_text(bridge.url)
            if (
                runs(text, "generate-report", "succeeded") == 20
                and runs(text, "generate-report", "dead_lettered") == 1
            ):
                break
            await asyncio.sleep(0.1)
        assert runs(text, "split-into-reports", "succeeded") == 1
        assert runs(text, "generate-report", "succeeded") == 20
        assert (
            runs(text, "generate-report", "dead_lettered") == 1
        )  # the missing report, at once (Fatal)
        body = await wait_for(f"{bridge.url}/v1/dead-letters", lambda b: len(b["items"]) == 1)
        (letter,) = body["items"]  # type: ignore[misc]
        assert letter["reason"] == "Fatal: report missing-1 does not exist"
        assert letter["event"]["data"] == {"batch_id": "b1", "report_id": "missing-1"}
    finally:
        assert bridge.terminate() == 0


@pytest.mark.e2e
async def test_cron_digest_sends_one_digest_per_subscriber_per_tick(tmp_path: Path) -> None:
    config = ROOT / "examples" / "cron-digest" / "bridge.yaml"
    emails = {s["email"] for s in json.loads((config.parent / "subscribers.json").read_text())}
    outbox = tmp_path / "outbox"
    env = {
        "BRIDGE_STORE": f"sqlite:///{tmp_path}/d.db",
        "DIGEST_SCHEDULE": "* * * * * */2",  # every two seconds instead of 07:00
        "DIGEST_OUTBOX": str(outbox),
    }
    bridge = BridgeProcess(config, tmp_path, env=env)
    bridge.start()
    ticks = sent = 0.0
    try:
        await bridge.wait_ready()
        for _ in range(300):
            text = await metrics_text(bridge.url)
            ticks = runs(text, "load-subscribers", "succeeded")
            sent = runs(text, "send-digest", "succeeded")
            if ticks >= 3 and sent == ticks * len(emails):
                break
            await asyncio.sleep(0.1)
        editions = sorted(outbox.iterdir(), key=lambda p: int(p.name))[: int(ticks)]
        written = [{p.name.removesuffix(".txt") for p in e.iterdir()} for e in editions]
    finally:
        assert bridge.terminate() == 0
    # Every tick loaded the list once and each subscriber got exactly one digest of it.
    assert ticks >= 3 and sent == ticks * len(emails)
    assert written == [emails] * int(ticks)
