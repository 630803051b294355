"""`bridge run` SIGKILLed right after a burst of webhook 202s, then restarted.

Supabase (shared secret) and Debezium (Standard Webhooks) requests pour in, mixed
with forged, oversize and malformed ones; the process is killed the moment the
burst ends, while most accepted events are still waiting for their handlers.
Proves: every request answered 202 reaches every handler after the restart; the
refused ones stored nothing; nothing is dead-lettered; SIGTERM then exits 0.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import CHAOS_FULL
from tests.support import recording_bridge, runs_by_event, signed_debezium, wait_all_ran

TOTAL = 10_000 if CHAOS_FULL else 1_500
CONCURRENCY = 32
HANDLERS = ("fast", "slow")
KEY = "whsec_" + base64.b64encode(b"crash-test-signing-key").decode()

CONFIG = """\
version: 1
store: sqlite:///{db}
telemetry: {{logs: {{format: json, level: ERROR}}}}
server: {{api: {{max_in_flight: 50}}}}
limits: {{max_body_bytes: 2048}}
drain_timeout: 10s
events:
  db/*: {{schema: none}}
connectors:
  supabase:
    type: webhook
    provider: supabase
    auth: {{header: x-supabase-secret, secret: "${{SUPABASE_SECRET}}"}}
  debezium:
    type: webhook
    provider: debezium
    auth: {{scheme: standard_webhooks, secret: "${{DEBEZIUM_KEY}}"}}
handlers:
  - {{id: fast, on: "db/*", type: python, function: "tests.apps.recorder:record"}}
  - {{id: slow, on: "db/*", type: python, function: "tests.apps.recorder:slow"}}
"""


def supabase_request(n: int) -> tuple[str, bytes, dict[str, str]]:
    body = orjson.dumps(
        {
            "type": "INSERT",
            "table": "signups",
            "schema": "public",
            "record": {"id": n, "email": f"user{n}@example.com"},
            "old_record": None,
        }
    )
    return "/hooks/supabase", body, {"x-supabase-secret": "s3cret"}


def debezium_request(n: int) -> tuple[str, bytes, dict[str, str]]:
    body, headers = signed_debezium(n, KEY, 1000)
    return "/hooks/debezium", body, headers


def bad_request(n: int) -> tuple[str, bytes, dict[str, str], int]:
    """A request that must be refused, and the status it must get."""
    kind = n % 4
    if kind == 0:
        path, body, _ = supabase_request(n)
        return path, body, {"x-supabase-secret": "guess"}, 401
    if kind == 1:
        path, body, headers = debezium_request(n)
        return path, body + b" ", headers, 401  # the body no longer matches its signature
    if kind == 2:
        return "/hooks/supabase", b"x" * 4096, {"x-supabase-secret": "s3cret"}, 413
    return "/hooks/supabase", b'{"type": "INSERT"', {"x-supabase-secret": "s3cret"}, 400


async def burst(url: str) -> tuple[set[str], Counter[int]]:
    """Send TOTAL good requests and TOTAL // 10 bad ones; return the ids answered 202."""
    jobs: list[tuple[str, bytes, dict[str, str], int]] = []
    for n in range(TOTAL):
        path, body, headers = supabase_request(n) if n % 2 else debezium_request(n)
        jobs.append((path, body, headers, 202))
        if n % 10 == 0:
            jobs.append(bad_request(n))
    queue: asyncio.Queue[tuple[str, bytes, dict[str, str], int]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    accepted: set[str] = set()
    statuses: Counter[int] = Counter()
    wrong: list[Any] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            path, body, headers, expected = queue.get_nowait()
            async with session.post(f"{url}{path}", data=body, headers=headers) as resp:
                answer = await resp.json(content_type=None)
                statuses[resp.status] += 1
                if resp.status != expected:
                    wrong.append((path, expected, resp.status, answer))
                if resp.status == 202:
                    accepted.update(answer["accepted"])

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    assert wrong == []
    return accepted, statuses


def inbox_rows(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        total, pending = conn.execute("SELECT COUNT(*), SUM(done_at IS NULL) FROM inbox").fetchone()
    return int(total), int(pending or 0)


@pytest.mark.e2e
# The kill must land while most runs are still to come: beside other tests of a parallel
# run the burst was once slow enough for the fast handler to finish more than half.
@pytest.mark.alone
@pytest.mark.timeout(300)
async def test_sigkill_after_a_burst_of_202s_loses_no_accepted_webhook(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(db=db))
    bridge, record = recording_bridge(
        config,
        tmp_path,
        "runs.txt",
        BRIDGE_TEST_SLOW_SECONDS="0.2",
        SUPABASE_SECRET="s3cret",
        DEBEZIUM_KEY=KEY,
    )
    bridge.start()
    await bridge.wait_ready()
    accepted, statuses = await burst(bridge.url)
    bridge.kill()

    assert len(accepted) == TOTAL
    bad = len(range(0, TOTAL, 10))
    assert statuses[202] == TOTAL and sum(statuses.values()) == TOTAL + bad
    assert inbox_rows(db)[0] == TOTAL  # the refused requests stored nothing
    done_before = set(runs_by_event(record))
    assert len(done_before) < len(accepted) * len(HANDLERS) // 2, "the kill came too late"

    bridge.start()
    await bridge.wait_ready()
    runs = await wait_all_ran(record, db, accepted, HANDLERS, within=180)
    assert bridge.terminate() == 0, bridge.log_tail()

    lost = [(h, e) for e in accepted for h in HANDLERS if runs[(h, e)] == 0]
    assert lost == []
    assert {e for _, e in runs} == accepted  # nothing ran that was not accepted
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 0
