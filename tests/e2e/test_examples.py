"""The examples run as documented: `bridge run` on each, events sent with `bridge send`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def example_bridge(name: str, tmp_path: Path, db: str, **env: str) -> tuple[Path, BridgeProcess]:
    """``examples/<name>/bridge.yaml`` and a ``BridgeProcess`` (not started) running it in
    ``tmp_path`` with its store in ``tmp_path/<db>``; ``env`` adds environment variables."""
    config = ROOT / "examples" / name / "bridge.yaml"
    store = {"BRIDGE_STORE": f"sqlite:///{tmp_path}/{db}"}
    return config, BridgeProcess(config, tmp_path, env={**store, **env})


@pytest.mark.e2e
async def test_newsletter_fans_one_signup_out_to_four_handlers(tmp_path: Path) -> None:
    config, bridge = example_bridge("newsletter", tmp_path, "n.db")
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


def jsonl(path: Path) -> list[dict[str, Any]]:
    """The records an example wrote to a JSON-lines file (none if it does not exist yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def wait_runs(url: str, expected: dict[tuple[str, str], int], within: float = 60.0) -> str:
    """Wait until every (handler, outcome) run count reaches its number; return /metrics."""
    for _ in range(int(within / 0.1)):
        text = await metrics_text(url)
        if all(runs(text, h, o) >= n for (h, o), n in expected.items()):
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"run counts never reached {expected}:\n{text}")


@pytest.mark.e2e
async def test_bulk_reports_fan_out_in_chunks_and_join_into_one_notification(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    config, bridge = example_bridge("bulk-reports", tmp_path, "r.db", REPORTS_DIR=str(out))
    bridge.start()
    try:
        await bridge.wait_ready()
        good = [f"r{i:02}" for i in range(20)] + ["r20-flaky"]
        broken = ["r21-broken", "r22-broken"]
        ids = good[:10] + broken[:1] + good[10:] + broken[1:]  # 23 ids: chunks of 10, 10, 3
        send(
            config,
            bridge.port,
            "reports/generate-bulk",
            {"batch_id": "b1", "report_ids": ids, "requested_by": "ada"},
        )
        expected = {
            ("split-into-chunks", "succeeded"): 1,
            ("split-chunk", "succeeded"): 3,
            ("generate-report", "succeeded"): len(ids),
            ("wait-for-reports", "succeeded"): 1 + len(ids),
            ("notify-requester", "succeeded"): 1,
        }
        text = await wait_runs(bridge.url, expected)
        assert runs(text, "split-into-chunks", "succeeded") == 1
        assert runs(text, "split-chunk", "succeeded") == 3  # 23 ids in chunks of 10
        # One child per report, each handled once: the broken ones end in reports/failed, the
        # flaky one succeeds on its second attempt.
        assert runs(text, "generate-report", "succeeded") == len(ids)
        assert runs(text, "generate-report", "dead_lettered") == 0
        assert await bridge.metric("bridge_retries_total", handler="generate-report") == 1
        # The join ran for the request and for each report's outcome event, and closed once.
        assert runs(text, "wait-for-reports", "succeeded") == 1 + len(ids)
        # ctx.step("upload"): one upload per generated report, the retried flaky one included.
        uploads = [r["report_id"] for r in jsonl(out / "uploads.jsonl")]
        assert sorted(uploads) == sorted(good)
        (note,) = jsonl(out / "notifications.jsonl")
        assert note == {
            "to": "ada",
            "batch_id": "b1",
            "status": "completed",
            "generated": sorted(good),
            "failed": broken,
            "missing": [],
        }
        assert runs(text, "notify-requester", "succeeded") == 1
    finally:
        assert bridge.terminate() == 0
    assert len(jsonl(out / "notifications.jsonl")) == 1


@pytest.mark.e2e
async def test_bulk_reports_time_out_naming_the_report_that_never_finished(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    config, bridge = example_bridge(
        "bulk-reports", tmp_path, "r.db", REPORTS_DIR=str(out), REPORTS_WAIT="15s"
    )
    bridge.start()
    try:
        await bridge.wait_ready()
        ids = ["r1", "r2", "r3-broken", "r4", "r5-unavailable"]
        send(
            config,
            bridge.port,
            "reports/generate-bulk",
            {"batch_id": "b2", "report_ids": ids, "requested_by": "bob"},
        )
        expected = {
            ("generate-report", "succeeded"): 4,
            ("generate-report", "dead_lettered"): 1,  # r5-unavailable, after 4 attempts
            ("wait-for-reports", "succeeded"): 1 + 4,  # the request and 4 outcome events
            ("notify-requester", "succeeded"): 1,
        }
        text = await wait_runs(bridge.url, expected, within=90)
        for (handler, outcome), count in expected.items():
            assert runs(text, handler, outcome) == count, (handler, outcome)
        assert await bridge.metric("bridge_retries_total", handler="generate-report") == 3
        (note,) = jsonl(out / "notifications.jsonl")
        assert note == {
            "to": "bob",
            "batch_id": "b2",
            "status": "timed_out",
            "generated": ["r1", "r2", "r4"],
            "failed": ["r3-broken"],
            "missing": ["r5-unavailable"],
        }
    finally:
        assert bridge.terminate() == 0
    assert len(jsonl(out / "notifications.jsonl")) == 1


@pytest.mark.e2e
async def test_departments_aggregate_once_every_child_task_is_done(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config, bridge = example_bridge("departments", tmp_path, "d.db", DEPARTMENTS_DIR=str(out))
    bridge.start()
    try:
        await bridge.wait_ready()
        tasks = {
            "sales": ["close-pipeline", "commission-fail"],
            "finance": ["reconcile", "accruals", "audit-pack"],
            "ops": ["inventory"],
        }
        sent = send(
            config,
            bridge.port,
            "quarter/close",
            {
                "quarter": "2026-Q4",
                "departments": [{"name": n, "tasks": t} for n, t in tasks.items()],
            },
        )
        ids_sent = sent["ids"]
        assert isinstance(ids_sent, list)
        (root_id,) = ids_sent
        expected = {
            ("split-quarter", "succeeded"): 1,
            ("split-department", "succeeded"): 3,
            ("run-task", "succeeded"): 5,
            ("run-task", "dead_lettered"): 1,
            ("summarize-department", "succeeded"): 3,
            ("report-quarter", "succeeded"): 1,
        }
        text = await wait_runs(bridge.url, expected)
        assert runs(text, "split-quarter", "succeeded") == 1
        assert runs(text, "split-department", "succeeded") == 3
        assert runs(text, "run-task", "succeeded") == 5
        assert runs(text, "run-task", "dead_lettered") == 1  # commission-fail, Fatal
        assert runs(text, "summarize-department", "succeeded") == 3
        assert runs(text, "report-quarter", "succeeded") == 1
        # One aggregate per department, with every child counted (the dead-lettered one too).
        summaries = {s["department"]: s for s in jsonl(out / "summaries.jsonl")}
        assert len(jsonl(out / "summaries.jsonl")) == 3
        assert {d: s["tasks"] for d, s in summaries.items()} == {"sales": 2, "finance": 3, "ops": 1}
        assert {d: s["failed"] for d, s in summaries.items()} == {
            "sales": ["commission-fail"],
            "finance": [],
            "ops": [],
        }
        assert {d: len(s["succeeded"]) for d, s in summaries.items()} == {
            "sales": 1,
            "finance": 3,
            "ops": 1,
        }
        # Each task ran once, kept the quarter's correlation id and named its department.
        executed = jsonl(out / "tasks.jsonl")
        assert sorted(e["task"] for e in executed) == sorted(
            f"2026-Q4/{d}/{t}" for d, ts in tasks.items() for t in ts
        )
        assert {e["correlation_id"] for e in executed} == {root_id}
        for e in executed:
            department = str(e["task"]).split("/")[1]
            assert e["parent_id"] == summaries[department]["department_event_id"]
        assert len({s["department_event_id"] for s in summaries.values()}) == 3
        (quarter,) = jsonl(out / "quarters.jsonl")
        assert quarter["departments"] == ["finance", "ops", "sales"]
        assert quarter["failed_tasks"] == ["sales/commission-fail"]
        assert quarter["correlation_id"] == root_id
    finally:
        assert bridge.terminate() == 0


@pytest.mark.e2e
async def test_cron_digest_sends_one_digest_per_subscriber_per_tick(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    config, bridge = example_bridge(
        "cron-digest",
        tmp_path,
        "d.db",
        DIGEST_SCHEDULE="* * * * * */2",  # every two seconds instead of 07:00
        DIGEST_OUTBOX=str(outbox),
    )
    emails = {s["email"] for s in json.loads((config.parent / "subscribers.json").read_text())}
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
