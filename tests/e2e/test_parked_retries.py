"""Parked retries through a real ``bridge run``, SIGKILLed and restarted.

Handlers' first attempts raise ``RetryAfter`` while ``defaults.inline_retry_limit`` is
1s, so each run is parked in the store and the event API's inbox entry settled. Then
the bridge is SIGKILLed:

- ``job/requested`` (3 events, retry after 6 s): killed during the backoff. After the
  restart each retry runs once, no earlier than the due time the store kept, as
  attempt 2, and succeeds.
- ``job/hang`` (1 event, retry after 1.5 s): the retry's handler hangs in the first
  process, which is killed inside it, holding the parked run's lease. The restarted
  bridge runs it again (still attempt 2: it never finished) and it succeeds.

Proves it by counts and by ordering: every execution is recorded with its attempt
number and wall-clock time; the due times are read from the store while parked.

Also: ``on_complete`` when a parked branch's retry finishes before its sibling: the
completion event is emitted once (it was never emitted before 62672b8). And parked runs
left behind by a crash after their branch became final are forgotten, not run again
(before adede5c they were re-claimed forever, or re-run when dead-lettered).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from bridge.dispatch import completion_event_id, parked_run_id
from bridge.events import Event
from bridge.store import create_store
from bridge.store.contracts import Attempt, LedgerEntry, ParkedRun
from tests.apps.orchestration import Line, parse
from tests.support import cloudevent, post_events, query, read_lines, recording_bridge, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

JOBS = [f"job-{n}" for n in range(3)]
HANG = "hang-0"

CONFIG = """\
version: 1
store: sqlite:///{db}
telemetry: {{logs: {{format: json, level: INFO}}}}
drain_timeout: 5s
defaults:
  inline_retry_limit: 1s
  retry: {{attempts: 3, backoff: fixed, min_delay: 100ms, max_delay: 100ms}}
events:
  job/*: {{schema: none}}
handlers:
  - {{id: worker, on: job/requested, type: python, function: "tests.apps.orchestration:park_once"}}
  - {{id: hanger, on: job/hang, type: python, function: "tests.apps.orchestration:park_then_hang"}}
"""


def parked(db: Path) -> dict[str, tuple[float, int, float]]:
    """event id -> (due_at, next attempt, leased_until) of every parked run."""
    out = {}
    for due_at, leased_until, record in query(
        db, "SELECT due_at, leased_until, record FROM parked"
    ):
        run = orjson.loads(record)  # type: ignore[arg-type]
        out[run["event"]["id"]] = (float(due_at), int(run["attempt"]), float(leased_until))  # type: ignore[arg-type]
    return out


def runs(record: Path) -> list[Line]:
    return parse(read_lines(record))


def settled(db: Path) -> bool:
    """Every run succeeded and nothing is parked any more."""
    succeeded = query(db, "SELECT COUNT(*) FROM ledger WHERE status = 'succeeded'")
    return succeeded == [(len(JOBS) + 1,)] and parked(db) == {}


async def test_parked_retries_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(db=db))
    bridge, record = recording_bridge(config, tmp_path, "runs.txt")
    events = [cloudevent(i, "job/requested", {}, "t") for i in JOBS]
    events.append(cloudevent(HANG, "job/hang", {}, "t"))
    for event in events:
        event["data"] = {"retry_after": 1.5 if event["id"] == HANG else 6}

    bridge.start()
    try:
        await bridge.wait_ready()
        async with aiohttp.ClientSession() as session:
            status, body = await post_events(session, bridge.url, events)
        assert status == 202, body

        # Parked, and the source messages settled: inbox entries done, nothing dead.
        await until(lambda: set(JOBS) <= set(parked(db)), 15, "every job parked")
        await until(
            lambda: query(db, "SELECT COUNT(*) FROM inbox WHERE done_at IS NULL") == [(0,)],
            15,
            "the inbox entries settled",
        )
        due = {event_id: row[0] for event_id, row in parked(db).items() if event_id in JOBS}
        assert {row[1] for row in parked(db).values()} == {2}  # the next attempt is the 2nd
        assert query(db, "SELECT COUNT(*) FROM dead_letters") == [(0,)]
        assert query(db, "SELECT COUNT(*) FROM ledger") == [(0,)]

        # The hanging retry was claimed and is running: kill the process there, which is
        # also during the jobs' backoff.
        await until(lambda: any(r.what == "hang" for r in runs(record)), 20, "the hang started")
        bridge.kill()
        before = runs(record)
        assert Counter(r.event_id for r in before if r.event_id in JOBS) == dict.fromkeys(JOBS, 1)
        assert {(r.attempt, r.what) for r in before if r.event_id in JOBS} == {(1, "park")}
        assert all(r.at < due[r.event_id] for r in before if r.event_id in JOBS)
        _, hang_attempt, hang_lease = parked(db)[HANG]
        assert hang_attempt == 2
        assert hang_lease > 0  # claimed by the process that died

        bridge.start()
        await bridge.wait_ready()
        await until(lambda: settled(db), 30, "every retry succeeded")
        # Two more scheduler rounds (it polls every second): still nothing runs again.
        await asyncio.sleep(2.5)
        assert await bridge.stop() == 0, bridge.log_tail()
    finally:
        bridge.kill()

    after = runs(record)
    retries = [r for r in after if r.event_id in JOBS and r.attempt > 1]
    # Each job's retry ran once, numbered 2, by the restarted process, not before its due time.
    assert Counter(r.event_id for r in retries) == dict.fromkeys(JOBS, 1)
    assert {(r.attempt, r.what, r.generation) for r in retries} == {(2, "ok", 2)}
    assert [(r.event_id, r.at, due[r.event_id]) for r in retries if r.at < due[r.event_id]] == []
    # The retry that died with its process ran again (still attempt 2: it never finished),
    # long before the dead process's lease would have run out.
    assert [(r.generation, r.attempt, r.what) for r in after if r.event_id == HANG] == [
        (1, 1, "park"),
        (1, 2, "hang"),
        (2, 2, "ok"),
    ]
    assert [r.at < hang_lease for r in after if r.event_id == HANG and r.generation == 2] == [True]
    assert len(after) == 2 * len(JOBS) + 3
    assert query(db, "SELECT COUNT(*) FROM dead_letters") == [(0,)]
    assert sorted(query(db, "SELECT event_id, status FROM ledger")) == [
        (i, "succeeded") for i in sorted([*JOBS, HANG])
    ]


MIXED_CONFIG = """\
version: 1
store: sqlite:///{db}
telemetry: {{logs: {{format: json, level: INFO}}}}
drain_timeout: 5s
defaults:
  inline_retry_limit: 1s
events:
  job/requested: {{schema: none}}
  mix/start: {{schema: none, on_complete: mix/done}}
  mix/done: {{schema: none}}
handlers:
  - {{id: worker, on: job/requested, type: python, function: "tests.apps.orchestration:park_once"}}
  - {{id: parker, on: mix/start, type: python, function: "tests.apps.orchestration:park_once"}}
  - {{id: slowpoke, on: mix/start, type: python, function: "tests.apps.orchestration:slow"}}
  - {{id: summary, on: mix/done, type: python, function: "tests.apps.orchestration:record"}}
"""


async def leave_parked_after_final(db: Path) -> None:
    """The store as a process leaves it when killed between recording a resumed run's final
    state in the ledger and forgetting its parked run: for ``worker``, ``done-ok``
    succeeded and ``done-dead`` was dead-lettered, and both are still parked (due now)."""
    store = create_store(f"sqlite:///{db}")
    await store.open()
    try:
        now = time.time()
        runs = []
        for event_id in ("done-ok", "done-dead"):
            event: Event[Any] = Event(id=event_id, source="t", type="job/requested", data={})
            runs.append(
                ParkedRun(
                    id=parked_run_id(event_id, "worker"),
                    handler="worker",
                    event=event.to_dict(),
                    connector="api",
                    attempt=3,
                    due_at=now - 1,
                    attempts=[Attempt(1, now - 9, 0.1, "x"), Attempt(2, now - 5, 0.1, "x")],
                )
            )
        await store.parked_put(runs)
        # Under the ledger keys of now (source and id): a store created by this version
        # has no keys of before (the event id alone), and its lookups do not read them.
        await store.ledger_record(
            [
                LedgerEntry("worker", "t\x1fdone-ok", "done-ok", "succeeded", {"attempt": 3}),
                LedgerEntry("worker", "t\x1fdone-dead", "done-dead", "dead_lettered", "x"),
            ]
        )
    finally:
        await store.close()


async def test_completion_after_a_parked_branch_and_parked_runs_left_final(
    tmp_path: Path,
) -> None:
    """Two cases on one bridge (one process start, for the make-test budget):

    - A crash left parked runs whose branch is already final in the ledger (the process
      died between recording the run and forgetting the parked run; seen in the chaos
      test): the restarted bridge forgets them and runs neither handler again.
    - One branch of ``mix-1`` parks (retry in 1.5 s) and its retry succeeds while the
      other branch is still running (5 s): when the last one finishes, the ``on_complete``
      event is emitted, once.
    """
    db = tmp_path / "state.db"
    config = tmp_path / "bridge.yaml"
    config.write_text(MIXED_CONFIG.format(db=db))
    await leave_parked_after_final(db)
    bridge, record = recording_bridge(config, tmp_path, "runs.txt")
    event = cloudevent("mix-1", "mix/start", {"retry_after": 1.5, "sleep": 5}, "t")
    bridge.start()
    try:
        await bridge.wait_ready()
        async with aiohttp.ClientSession() as session:
            status, body = await post_events(session, bridge.url, [event])
        assert status == 202, body
        await until(
            lambda: len(query(db, "SELECT 1 FROM ledger WHERE event_id = 'mix-1'")) == 2,
            20,
            "both branches of mix-1 succeeded",
        )
        ran = {(r.handler, r.attempt): r.at for r in runs(record) if r.event_id == "mix-1"}
        # The retry finished before the slow sibling did: the case under test.
        assert ran[("parker", 2)] < ran[("slowpoke", 1)]
        await until(
            lambda: any(r.handler == "summary" for r in runs(record)),
            6,
            "the completion event was handled",
        )
        await until(lambda: parked(db) == {}, 5, "every parked run forgotten")
        await asyncio.sleep(1.5)  # more scheduler and inbox rounds: nothing else runs
        assert await bridge.stop() == 0, bridge.log_tail()
    finally:
        bridge.kill()
    assert [r.handler for r in runs(record) if r.handler == "summary"] == ["summary"]
    # The runs left parked after they became final did not run again.
    assert [r for r in runs(record) if r.event_id.startswith("done-")] == []
    assert sorted(query(db, "SELECT handler, event_id, status FROM ledger")) == sorted(
        [
            ("worker", "done-dead", "dead_lettered"),
            ("worker", "done-ok", "succeeded"),
            ("parker", "mix-1", "succeeded"),
            ("slowpoke", "mix-1", "succeeded"),
            ("summary", completion_event_id("mix-1"), "succeeded"),
        ]
    )
    assert query(db, "SELECT COUNT(*) FROM dead_letters") == [(0,)]
