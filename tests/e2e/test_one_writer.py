"""One writer per SQLite file: a second ``bridge run`` on the same store refuses to start.

The first bridge holds ``<db>.lock`` for its life; the second exits non-zero within
seconds with one error line naming the first one's pid, and the first keeps serving.
``bridge dlq`` still reads the store while the bridge runs, and a lock file left by a
killed bridge does not keep the next one from starting.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support import ROOT, BridgeProcess, cloudevent, post_events, write_config

HANDLERS = [{"id": "log", "on": "test/*", "type": "log"}]


@pytest.mark.e2e
async def test_a_second_bridge_on_the_same_sqlite_file_refuses(tmp_path: Path) -> None:
    config = write_config(tmp_path, handlers=HANDLERS)
    first = BridgeProcess(config, tmp_path)
    second = BridgeProcess(config, tmp_path)
    second.log_path = tmp_path / "second.log"
    first.start()
    try:
        await first.wait_ready()
        second.start()
        code = await second.exited(within=15)
        assert code != 0
        errors = [line for line in second.log_tail().splitlines() if line.startswith("error:")]
        assert len(errors) == 1, second.log_tail()
        pid = first.proc.pid if first.proc else -1
        assert f"pid {pid}" in errors[0] and "state.db" in errors[0], errors[0]
        assert "in use by another bridge" in errors[0]
        # The first one keeps running and serving.
        assert first.exit_reason() is None
        assert await first.ready()
        async with aiohttp.ClientSession() as session:
            status, _ = await post_events(session, first.url, [cloudevent("e-1", "test/a", {})])
        assert status == 202
        # The dead-letter CLI opens the store briefly, beside the running bridge.
        dlq = subprocess.run(
            [sys.executable, "-m", "bridge", "dlq", "-c", str(config), "list"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert dlq.returncode == 0, dlq.stderr
    finally:
        second.kill()
        assert await first.stop() == 0


@pytest.mark.e2e
async def test_a_lock_left_by_a_killed_bridge_does_not_block(tmp_path: Path) -> None:
    config = write_config(tmp_path, handlers=HANDLERS)
    bridge = BridgeProcess(config, tmp_path)
    bridge.start()
    try:
        await bridge.wait_ready()
        bridge.kill()
        assert (tmp_path / "state.db.lock").exists()
        bridge.start()
        await bridge.wait_ready()
        pid = bridge.proc.pid if bridge.proc else -1
        assert (tmp_path / "state.db.lock").read_text().startswith(f"pid {pid} on ")
    finally:
        assert await bridge.stop() == 0
    # A clean exit releases the lock and clears the holder's line.
    assert (tmp_path / "state.db.lock").read_text() == ""
