"""Every ``bridge`` command of the README's shell blocks, run as written, in order,
against the newsletter example running as ``make run`` runs it (on a free port and a
store of its own, through the ``BRIDGE_LISTEN`` and ``BRIDGE_STORE`` the example reads).

The quickstart promises: Ada's signup runs all four handlers; Bob's bounces, so
``send-welcome-email`` is dead-lettered at once and the three others succeed;
``bridge dlq list`` shows that one letter; ``validate`` and ``test`` pass.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, BridgeProcess, free_port, ledger_succeeded, query, until
from tests.unit.test_readme import LONG_RUNNING, readme_commands

CONFIG = ROOT / "examples" / "newsletter" / "bridge.yaml"


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.e2e
async def test_the_readme_commands_do_what_the_readme_says(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "newsletter.db"
    settings = {"BRIDGE_LISTEN": f"127.0.0.1:{port}", "BRIDGE_STORE": f"sqlite:///{db}"}
    env = {**os.environ, "PYTHONPATH": str(ROOT), **settings}
    bridge = BridgeProcess(CONFIG, tmp_path, env=settings, port=port)
    bridge.start()
    outputs: list[tuple[str, str]] = []
    try:
        await bridge.wait_ready()
        for command in readme_commands():
            if command in LONG_RUNNING:
                continue
            if " dlq " in command:  # once Bob's letter is filed
                await until(lambda: bool(letters(db)), 30, "the dead letter")
            done = await asyncio.to_thread(run, command, env)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            outputs.append((" ".join(command.split()[:2]), done.stdout))
        await until(lambda: len(ledger_succeeded(db)) == 6, 30, "4 runs for Ada, 2 for Bob")
    finally:
        await bridge.stop()
    log = bridge.log_path.read_text()
    ran = [name for name, _ in outputs]
    assert ran == [
        ".venv/bin/bridge send",
        ".venv/bin/bridge send",
        ".venv/bin/bridge dlq",
        ".venv/bin/bridge validate",
        ".venv/bin/bridge test",
    ], ran
    # Ada: four handlers; Bob (no preferences): three, of which the email is dead-lettered.
    succeeded = sorted(handler for handler, _ in ledger_succeeded(db))
    assert succeeded == [
        "create-profile",
        "create-profile",
        "send-welcome-email",
        "setup-preferences",
        "track-analytics",
        "track-analytics",
    ], succeeded
    assert letters(db) == [("send-welcome-email", "pending")]
    listed = outputs[2][1]
    assert "send-welcome-email" in listed and "pending" in listed, listed
    assert "welcome email sent to ada@example.com" in log, log[-3000:]
    assert "mailbox does not exist" in log, log[-3000:]
    assert "passed, 0 failed" in outputs[4][1], outputs[4][1]


def letters(db: Path) -> list[tuple[str, str]]:
    return [(h, s) for h, s in query(db, "SELECT handler, status FROM dead_letters")]
