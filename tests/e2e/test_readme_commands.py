"""Every shell command of the README's quickstart, run as written, in order, from a
directory laid out like the repository root (``.venv`` and ``examples`` linked into it),
against the newsletter example running there as ``make run`` runs it (on a free port,
through the ``BRIDGE_LISTEN`` the example reads; its store under that directory's
``.bridge/``). ``ID`` is the one substitution: the dead letter's id from the list.

What the README promises: Ada's signup runs all four handlers; with the email provider
down, Grace's ``send-welcome-email`` is dead-lettered after 5 attempts while the other
three succeed; the letter is listed and shown; once the provider is back its replay
runs the welcome email alone, and the letter is ``replayed``; ``validate`` and
``test`` pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, BridgeProcess, free_port
from tests.unit.test_readme import LONG_RUNNING, readme_commands

CONFIG = Path("examples") / "newsletter" / "bridge.yaml"
HANDLERS = ("send-welcome-email", "create-profile", "track-analytics", "setup-preferences")


def shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def succeeded(bridge: BridgeProcess) -> dict[str, float]:
    return {
        h: await bridge.metric("bridge_runs_total", handler=h, outcome="succeeded")
        for h in HANDLERS
    }


@pytest.mark.e2e
async def test_the_readme_commands_do_what_the_readme_says(tmp_path: Path) -> None:
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BRIDGE_LISTEN": f"127.0.0.1:{port}"}
    env.pop("BRIDGE_STORE", None)  # the example's own store, under .bridge/ where it runs
    bridge = BridgeProcess(tmp_path / CONFIG, tmp_path, port=port)
    bridge.env.pop("BRIDGE_STORE", None)
    bridge.start()
    letter = ""
    seen: list[str] = []
    try:
        await bridge.wait_ready()
        for command in readme_commands():
            if command in LONG_RUNNING:
                continue
            if " dlq " in command and not letter:  # once Grace's letter is filed
                await bridge.wait_metric(
                    "bridge_dead_letters_total", 1, handler="send-welcome-email"
                )
                assert await succeeded(bridge) == {
                    "send-welcome-email": 1,  # Ada's
                    "create-profile": 2,
                    "track-analytics": 2,
                    "setup-preferences": 2,
                }
            done = await asyncio.to_thread(
                shell, re.sub(r"\bID\b", letter or "ID", command), tmp_path, env
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            seen.append(" ".join(command.split()[:3]))
            if command.endswith(" list") and not letter:
                (row,) = [line for line in done.stdout.splitlines() if "send-welcome-email" in line]
                letter = row.split()[0]
                assert "pending" in row.split(), row
            elif command.endswith(" show ID"):
                shown = json.loads(done.stdout)
                assert shown["event"]["data"]["email"] == "grace@example.com"
                assert len(shown["attempts"]) == 5
                assert all("smtp.example.com is down" in a["traceback"] for a in shown["attempts"])
            elif command.endswith(" replay ID"):
                await bridge.wait_metric(
                    "bridge_runs_total", 2, handler="send-welcome-email", outcome="succeeded"
                )
            elif command.endswith(" list"):
                (row,) = [line for line in done.stdout.splitlines() if letter in line]
                assert "replayed" in row.split(), row
            elif " test " in command:
                assert "passed, 0 failed" in done.stdout, done.stdout
        # Only the failed branch ran again.
        assert await succeeded(bridge) == dict.fromkeys(HANDLERS, 2)
    finally:
        assert await bridge.stop() == 0
    assert seen == [
        ".venv/bin/bridge send -c",
        "touch .bridge/email-down",
        ".venv/bin/bridge send -c",
        ".venv/bin/bridge dlq -c",
        ".venv/bin/bridge dlq -c",
        "rm .bridge/email-down",
        ".venv/bin/bridge dlq -c",
        ".venv/bin/bridge dlq -c",
        ".venv/bin/bridge validate -c",
        ".venv/bin/bridge test -c",
    ], seen
