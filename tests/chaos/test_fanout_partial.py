"""Chaos 6: fan-out with one failing branch, on RabbitMQ, with the bridge SIGKILLed mid-stream.

Three handlers per event: ``a`` and ``b`` always succeed; ``c`` fails 20% of its
attempts transiently and 1% of events permanently, decided by a hash of
(event id, attempt) (``tests.apps.recorder.fate``), so what must succeed and what
must be dead-lettered is computed before the run. ``bridge run`` consumes a real
RabbitMQ queue and is SIGKILLed while the queue drains (twice at full size).

Proves, for every branch: succeeded + dead-lettered = every event, exactly the
expected ones dead-lettered (none on ``a``/``b``); a branch the ledger recorded as
succeeded before a kill never runs again; repeated executions of succeeded
branches stay within the in-flight window per kill.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.apps.recorder import fate
from tests.chaos.report import ChaosReport
from tests.conftest import CHAOS_FULL
from tests.fixtures.rabbitmq import RabbitAdmin
from tests.support import (
    ledger_succeeded,
    query,
    rabbitmq_connector,
    read_lines,
    recorder,
    recording_bridge,
    until,
    write_config,
)

TOTAL = 20_000 if CHAOS_FULL else 2_000
KILLS = 2 if CHAOS_FULL else 1
ATTEMPTS = 4
FAIL_RATE = 0.2
FATAL_RATE = 0.01
MAX_IN_FLIGHT = 100
HANDLERS = ("a", "b", "c")


def config(tmp_path: Path, url: str, queue: str) -> Path:
    retry = {"attempts": ATTEMPTS, "backoff": "fixed", "min_delay": "20ms", "max_delay": "20ms"}
    connector = rabbitmq_connector(
        url, queue, max_in_flight=MAX_IN_FLIGHT, declare={"durable": True}
    )
    return write_config(
        tmp_path,
        telemetry={"logs": {"format": "json", "level": "ERROR"}},
        server={"api": {"enabled": False}},
        connectors={"rabbit": connector},
        handlers=[recorder("a"), recorder("b"), recorder("c", "hashed", retry=retry)],
    )


def expected_dead(ids: list[str]) -> tuple[set[str], set[str]]:
    """(permanently failing, failing every attempt) among ``ids`` for handler c."""
    fatal = {i for i in ids if fate(i, 1, FAIL_RATE, FATAL_RATE) == "fatal"}
    exhausted = {
        i
        for i in ids
        if i not in fatal
        and all(fate(i, n, FAIL_RATE, FATAL_RATE) == "fail" for n in range(1, ATTEMPTS + 1))
    }
    return fatal, exhausted


def successes(record: Path) -> list[tuple[int, str, str]]:
    """(generation, handler, event id) of every successful execution, in order."""
    out = []
    for line in read_lines(record):
        generation, handler, event_id, _attempt, extra = line.split(" ")
        if extra not in ("fail", "fatal"):
            out.append((int(generation), handler, event_id))
    return out


def dead_letters(db: Path) -> list[tuple[str, str]]:
    return [(h, e) for h, e in query(db, "SELECT handler, event_id FROM dead_letters")]


@pytest.mark.chaos
@pytest.mark.timeout(900 if CHAOS_FULL else 180)
async def test_fanout_partial_failure_settles_every_branch(
    rabbit: RabbitAdmin, tmp_path: Path
) -> None:
    report = ChaosReport("fanout_partial_failure", sent=TOTAL)
    queue = rabbit.name("fanout")
    await rabbit.queue(queue)
    ids = [f"m{n:06d}" for n in range(TOTAL)]
    fatal, exhausted = expected_dead(ids)
    want_dead = fatal | exhausted
    assert fatal and exhausted, "the sample should hold both kinds of dead letter"
    await rabbit.publish_many(
        queue, [(json.dumps({"seq": n}).encode(), {"message_id": i}) for n, i in enumerate(ids)]
    )

    db = tmp_path / "state.db"
    proc, record = recording_bridge(
        config(tmp_path, rabbit.url, queue),
        tmp_path,
        BRIDGE_TEST_FAIL_RATE=str(FAIL_RATE),
        BRIDGE_TEST_FATAL_RATE=str(FATAL_RATE),
    )

    def final_branches() -> int:
        done = {(h, e) for _, h, e in successes(record)}
        return len(done) + len({(h, e) for h, e in dead_letters(db)} - done)

    kill_guard: list[set[tuple[str, str]]] = []  # ledger successes at each kill
    proc.start()
    try:
        await proc.wait_ready()
        for k in range(1, KILLS + 1):
            target = TOTAL * len(HANDLERS) * k // (KILLS + 1)
            await until(lambda t=target: final_branches() >= t, 300, f"{target} branches final")
            proc.kill()
            report.faults.append(f"SIGKILL after {final_branches()} final branches")
            kill_guard.append(ledger_succeeded(db))
            killed_at = time.monotonic()
            proc.start()
            await proc.wait_ready()
            report.recovery_seconds.append(round(time.monotonic() - killed_at, 2))
        await until(lambda: final_branches() >= TOTAL * len(HANDLERS), 600, "every branch final")
        assert await proc.stop() == 0, proc.log_tail()
    finally:
        proc.kill()
    ready, _ = await rabbit.depth(queue)

    runs = successes(record)
    succeeded = {h: {e for _, hh, e in runs if hh == h} for h in HANDLERS}
    letters = dead_letters(db)
    dead = {h: {e for hh, e in letters if hh == h} for h in HANDLERS}
    every = set(ids)
    lost = {h: every - succeeded[h] - dead[h] for h in HANDLERS}
    both = {h: succeeded[h] & dead[h] for h in HANDLERS}
    counts = Counter((h, e) for _, h, e in runs)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    # A branch recorded as succeeded before kill k must not run in a later generation.
    rerun_after_recorded = [
        (g, h, e)
        for g, h, e in runs
        for k, guard in enumerate(kill_guard, start=1)
        if g > k and (h, e) in guard
    ]
    attempts_c = [line for line in read_lines(record) if line.split(" ")[1] == "c"]

    report.delivered = sum(
        1 for e in ids if all(e in succeeded[h] or e in dead[h] for h in HANDLERS)
    )
    report.lost = sum(len(v) for v in lost.values())
    report.duplicates = duplicates
    report.dead_lettered = len(letters)
    report.extra = {
        "handlers": list(HANDLERS),
        "attempts": ATTEMPTS,
        "fail_rate": FAIL_RATE,
        "fatal_rate": FATAL_RATE,
        "max_in_flight": MAX_IN_FLIGHT,
        "kills": KILLS,
        "succeeded": {h: len(succeeded[h]) for h in HANDLERS},
        "dead_lettered": {h: len(dead[h]) for h in HANDLERS},
        "expected_dead_c": {"fatal": len(fatal), "exhausted": len(exhausted)},
        "dead_letter_records_repeated": len(letters) - len(set(letters)),
        "attempts_c": len(attempts_c),
        "reruns_after_recorded_success": len(rerun_after_recorded),
        "queue_left": ready,
    }
    report.write()

    assert lost == {h: set() for h in HANDLERS}
    assert both == {h: set() for h in HANDLERS}
    assert dead["a"] == set() and dead["b"] == set()
    assert dead["c"] == want_dead
    assert succeeded["c"] == every - want_dead
    assert rerun_after_recorded == []
    assert duplicates <= KILLS * MAX_IN_FLIGHT * len(HANDLERS)
    assert ready == 0
