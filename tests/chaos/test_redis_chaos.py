"""Chaos on Redis Streams (scenario ``redis_sigkill``): the bridge SIGKILLed mid-stream
and restarted (a new consumer name each time: ``<hostname>-<pid>``), so what the dead
process held is claimed with XAUTOCLAIM after ``claim_idle``. The connector runs
``ordering: key`` on an entry field. 0 lost; duplicates only within the in-flight
window (runs finished but not yet in the ledger at the kill); per key, the first
executions follow the stream order (the restarted source claims what the dead one
held before it reads new entries); nothing left pending.

Full size (``make chaos``): 50,000 entries, 3 kills. Small (``make test``): 3,000, 1 kill.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from tests.chaos.report import ChaosReport
from tests.chaos.tally import Tally
from tests.conftest import CHAOS_FULL
from tests.fixtures.redis import RedisAdmin, redis_connector
from tests.support import READY_WITHIN, line_count, recorder, recording_bridge, until, write_config

pytestmark = pytest.mark.chaos

HANDLERS = ("a", "b")
KEYS = 50
MAX_IN_FLIGHT = 200


def key_of(n: int) -> str:
    return f"k{n % KEYS}"


def seq_position(_event_id: str, seq: str) -> int:
    """Entries were added in ``seq`` order, so ``seq`` is their place in the stream."""
    return int(seq)


@pytest.mark.timeout(1800 if CHAOS_FULL else 120)
async def test_sigkills_lose_nothing(redis_admin: RedisAdmin, tmp_path: Path) -> None:
    total, kills = (50_000, 3) if CHAOS_FULL else (3_000, 1)
    report = ChaosReport("redis_sigkill", sent=total)
    report.extra.update(handlers=len(HANDLERS), max_in_flight=MAX_IN_FLIGHT, kills=kills, keys=KEYS)
    stream = redis_admin.stream("chaos")
    await redis_admin.group(stream)
    await redis_admin.add_many(
        stream,
        [orjson.dumps({"seq": n}) for n in range(total)],
        fields=lambda n: {"user": key_of(n)},
    )
    connector = redis_connector(
        redis_admin.url,
        stream,
        max_in_flight=MAX_IN_FLIGHT,
        # Longer than a restart takes, so the restarted source finds the dead one's
        # entries not claimable yet: it must wait for them before reading new ones.
        claim_idle="15s",
        claim_interval="500ms",
        ordering="key",
        key="field:user",
    )
    config = write_config(
        tmp_path, connectors={"redis": connector}, handlers=[recorder(h) for h in HANDLERS]
    )
    proc, record = recording_bridge(config, tmp_path)

    def handled() -> int:
        return line_count(record) // len(HANDLERS)

    proc.start()
    try:
        await proc.wait_ready(READY_WITHIN)
        for i in range(kills):
            point = total * (i + 1) // (kills + 1)
            await until(lambda p=point: handled() >= p, 300, f"{point} handled", watch=[proc])  # type: ignore[misc]
            proc.kill()
            killed_at = time.monotonic()
            at_kill = handled()
            report.faults.append(f"SIGKILL after {at_kill} handled")
            assert at_kill < total, "the kill came after the stream was through"
            report.extra.setdefault("pending_at_kill", []).append(await redis_admin.pending(stream))
            proc.start()
            await proc.wait_ready(READY_WITHIN)
            await until(
                lambda a=at_kill: handled() > a,  # type: ignore[misc]
                120,
                "work after the restart",
                watch=[proc],
                every=0.1,
            )
            report.recovery_seconds.append(round(time.monotonic() - killed_at, 2))
        await until(
            lambda: Tally.of(record).missing(HANDLERS, total) == 0,
            600,
            "every entry through both handlers",
            every=0.5,
            watch=[proc],
        )

        async def nothing_pending() -> bool:
            return await redis_admin.pending(stream) == 0

        await until(nothing_pending, 30, "every entry acked", watch=[proc])
        report.dead_lettered = len(await proc.dead_letters(limit="1000"))
        assert proc.terminate() == 0
    finally:
        proc.kill()

    tally = Tally.of(record)
    report.delivered = tally.delivered(HANDLERS, total)
    report.lost = tally.missing(HANDLERS, total)
    report.duplicates = sum(tally.duplicates(h) for h in HANDLERS)
    violations = {h: tally.order_violations(h, key_of, seq_position) for h in HANDLERS}
    report.extra["order_violations"] = violations
    report.write()

    assert report.lost == 0
    # A kill can repeat only runs that were in flight then: at most max_in_flight per handler.
    assert report.duplicates <= kills * MAX_IN_FLIGHT * len(HANDLERS)
    assert report.dead_lettered == 0
    assert violations == dict.fromkeys(HANDLERS, 0)
