"""docs/quickstart-snippet.md as written: the newsletter example, one branch made to fail,
its dead letter listed, shown and replayed with the `bridge dlq` commands the page gives."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, BridgeProcess

SNIPPET = ROOT / "docs" / "quickstart-snippet.md"
CONFIG = ROOT / "examples" / "newsletter" / "bridge.yaml"
HANDLERS = ("send-welcome-email", "create-profile", "track-analytics", "setup-preferences")


def blocks() -> list[list[str]]:
    """The page's ``sh`` blocks, each as its commands (continuations joined, comments cut)."""
    found = re.findall(r"```sh\n(.*?)```", SNIPPET.read_text(), re.S)
    return [
        [
            re.sub(r"\s+#.*$", "", line).strip()
            for line in block.replace("\\\n", " ").splitlines()
            if line.strip()
        ]
        for block in found
    ]


def shell(command: str, cwd: Path, port: int, letter: str = "") -> subprocess.CompletedProcess[str]:
    """One command of the page as a user in the repository root runs it; the bridge
    command, the example's path and the letter's ``ID`` are the only substitutions."""
    command = command.replace(".venv/bin/bridge", f"{sys.executable} -m bridge")
    command = command.replace("examples/", f"{ROOT}/examples/")
    command = re.sub(r"\bID\b", letter, command)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BRIDGE_LISTEN": f"127.0.0.1:{port}"}
    env.pop("BRIDGE_STORE", None)  # the example's own store, under .bridge/ where it runs
    proc = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout}{proc.stderr}"
    return proc


async def runs(bridge: BridgeProcess, outcome: str) -> dict[str, float]:
    return {
        h: await bridge.metric("bridge_runs_total", handler=h, outcome=outcome) for h in HANDLERS
    }


@pytest.mark.e2e
async def test_the_quickstart_fails_one_branch_and_replays_its_dead_letter(
    tmp_path: Path,
) -> None:
    fail, inspect, replay = blocks()
    assert [c.split()[0] for c in fail] == ["touch", ".venv/bin/bridge"]
    bridge = BridgeProcess(CONFIG, tmp_path)
    bridge.env.pop("BRIDGE_STORE", None)  # the example's store: .bridge/newsletter.db
    bridge.start()
    try:
        await bridge.wait_ready()
        for command in fail:
            shell(command, tmp_path, bridge.port)
        await bridge.wait_metric("bridge_dead_letters_total", 1, handler="send-welcome-email")
        # One branch failed 5 times and was dead-lettered; the other three succeeded once.
        assert await runs(bridge, "succeeded") == {
            "send-welcome-email": 0,
            "create-profile": 1,
            "track-analytics": 1,
            "setup-preferences": 1,
        }

        listed = shell(inspect[0], tmp_path, bridge.port).stdout.splitlines()
        assert listed[0].split()[:3] == ["ID", "CREATED", "STATUS"]
        (row,) = listed[1:]
        letter, _, status, handler, event_type, *reason = row.split()
        assert (status, handler, event_type) == (
            "pending",
            "send-welcome-email",
            "subscriber/created",
        )
        assert " ".join(reason).startswith("ConnectionError: smtp.example.com is down")
        shown = json.loads(shell(inspect[1], tmp_path, bridge.port, letter).stdout)
        assert shown["event"]["data"]["email"] == "grace@example.com"
        assert len(shown["attempts"]) == 5
        assert all("smtp.example.com is down" in a["traceback"] for a in shown["attempts"])

        for command in replay[:2]:  # rm the switch, replay
            shell(command, tmp_path, bridge.port, letter)
        await bridge.wait_metric(
            "bridge_runs_total", 1, handler="send-welcome-email", outcome="succeeded"
        )
        # Only the failed branch ran again.
        assert await runs(bridge, "succeeded") == dict.fromkeys(HANDLERS, 1)
        (after,) = shell(replay[2], tmp_path, bridge.port).stdout.splitlines()[1:]
        assert (after.split()[0], after.split()[2]) == (letter, "replayed")
    finally:
        assert await bridge.stop() == 0
