"""`bridge dlq` against a running bridge: list, show, replay to the failed handler, discard."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from tests.support import ROOT, BridgeProcess, post_events, read_lines

CONFIG = """\
version: 1
store: sqlite:///{db}
defaults: {{retry: {{attempts: 2, min_delay: 0, jitter: 0}}}}
events:
  job/run: {{schema: none}}
handlers:
  - {{id: steady, on: job/run, type: python, function: "tests.apps.recorder:record"}}
  - {{id: gated, on: job/run, type: python, function: "tests.apps.recorder:gated"}}
"""

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def dlq(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "dlq", "-c", str(config), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.e2e
async def test_dead_letters_are_listed_and_replayed_into_the_running_bridge(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "state.db"))
    gate = tmp_path / "gate"
    gate.touch()
    record = tmp_path / "runs.txt"
    bridge = BridgeProcess(
        config, tmp_path, env={"BRIDGE_TEST_RECORD": str(record), "BRIDGE_TEST_GATE": str(gate)}
    )
    bridge.start()
    try:
        await bridge.wait_ready()
        async with aiohttp.ClientSession() as session:
            events = [
                {"specversion": "1.0", "id": f"j{i}", "type": "job/run", "data": {"key": i}}
                for i in range(3)
            ]
            status, _ = await post_events(session, bridge.url, events)
        assert status == 202
        await bridge.wait_metric("bridge_dead_letters_total", 3, handler="gated")
        listed = dlq(config, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        letters = [json.loads(line) for line in listed.stdout.splitlines()]
        assert sorted(d["event_id"] for d in letters) == ["j0", "j1", "j2"]
        assert {d["handler"] for d in letters} == {"gated"}
        assert all(len(d["attempts"]) == 2 for d in letters)
        # The table: a header row, then one row per letter, times in ISO 8601 (UTC).
        table = dlq(config, "list").stdout.splitlines()
        assert table[0].split() == ["ID", "CREATED", "STATUS", "HANDLER", "EVENT", "TYPE", "REASON"]
        assert sorted(row.split()[0] for row in table[1:]) == sorted(d["id"] for d in letters)
        assert all(ISO_UTC.fullmatch(row.split()[1]) for row in table[1:]), table
        shown = dlq(config, "show", letters[0]["id"])
        assert json.loads(shown.stdout)["reason"] == "RuntimeError: the gate is closed"
        assert ISO_UTC.fullmatch(json.loads(shown.stdout)["created_at"])
        assert all(ISO_UTC.fullmatch(a["started_at"]) for a in json.loads(shown.stdout)["attempts"])
        assert datetime.fromisoformat(json.loads(shown.stdout)["created_at"]) <= datetime.now(UTC)
        # Every failed attempt keeps its stack trace: in the JSON, and readable on stderr.
        gate_line = 'raise RuntimeError("the gate is closed")'
        assert all(gate_line in a["traceback"] for a in json.loads(shown.stdout)["attempts"])
        assert "attempt 1 traceback:" in shown.stderr and gate_line in shown.stderr

        gate.unlink()  # the downstream is fixed
        by_event = {d["event_id"]: d["id"] for d in letters}
        for event_id in ("j0", "j1"):
            replayed = dlq(config, "replay", by_event[event_id])
            assert replayed.returncode == 0, replayed.stderr
        discarded = dlq(config, "discard", by_event["j2"])
        assert discarded.returncode == 0
        for _ in range(100):  # the bridge polls the inbox for entries written by other processes
            runs = [line.split(" ")[1:3] for line in read_lines(record)]
            if ["gated", "j0"] in runs and ["gated", "j1"] in runs:
                break
            await asyncio.sleep(0.1)
        runs = [line.split(" ")[1:3] for line in read_lines(record)]
        # Only the failed branch ran again: `steady` ran once per event, `gated` once per replay.
        assert sorted(r for r in runs if r[0] == "steady") == [
            ["steady", "j0"],
            ["steady", "j1"],
            ["steady", "j2"],
        ]
        assert sorted(r for r in runs if r[0] == "gated") == [["gated", "j0"], ["gated", "j1"]]
        statuses = {
            json.loads(line)["event_id"]: json.loads(line)["status"]
            for line in dlq(config, "list", "--json").stdout.splitlines()
        }
        assert statuses == {"j0": "replayed", "j1": "replayed", "j2": "discarded"}
        missing = dlq(config, "replay", "no-such-id")
        assert missing.returncode == 1 and "no dead letter" in missing.stderr
    finally:
        assert await bridge.stop() == 0
