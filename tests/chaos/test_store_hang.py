"""Chaos 8b: the PostgreSQL store hangs for 30 s (8 s in ``make test``) under load.

Not stopped (``test_store_outage.py``): hung, which no error announces. ``bridge run``
consumes a real RabbitMQ queue with its store reached through a TCP proxy that the
test runs (``tests.fixtures.tcp_proxy``), in a private schema of the machine's
PostgreSQL. A publisher keeps sending; then either

* the proxy black-holes the store: it stops forwarding, keeping every socket open, or
* another session holds ``LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE`` in an open
  transaction,

for ``OUTAGE`` seconds, with the store's default deadlines (5 s a call, 2 s the ping).
Events are also posted to the event API during the hang and after it.

Proves: ``/readyz`` answers false within 5 s of the hang and stays false; intake
pauses (deliveries are held; only runs already past their ledger read finish); the event
API answers (503, or 202 when what it writes is not locked) instead of hanging; no
message is acked that the ledger had not recorded; work resumes by itself when the
store answers again; every message published runs on every handler: 0 lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.chaos.report import ChaosReport
from tests.chaos.test_store_outage import HANDLERS, Load, config, executed, queue_messages, ran
from tests.conftest import CHAOS_FULL
from tests.fixtures.postgres import POSTGRES_URL
from tests.fixtures.rabbitmq import RabbitAdmin
from tests.fixtures.tcp_proxy import TcpProxy
from tests.support import cloudevent, post_events, recording_bridge, until

WARM = 10.0 if CHAOS_FULL else 2.0
OUTAGE = 30.0 if CHAOS_FULL else 8.0
AFTER = 10.0 if CHAOS_FULL else 3.0
MAX_IN_FLIGHT = 100  # as test_store_outage.config sets
NOT_READY_WITHIN = 5.0  # seconds after the hang starts
SETTLE = 2.0  # seconds after the hang starts before intake is counted as paused


async def readyz(session: aiohttp.ClientSession, url: str) -> bool | None:
    """True/False as /readyz answers; None when it does not answer within 4 s (the ping's
    own deadline is 2 s: /readyz must answer, not hang)."""
    try:
        async with session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=4)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return None


async def fully_recorded(conn: asyncpg.Connection, schema: str, ids: set[str]) -> int:
    """How many of ``ids`` the ledger holds as succeeded on every handler."""
    rows = await conn.fetch(
        f"SELECT handler, event_id FROM \"{schema}\".ledger WHERE status = 'succeeded'"
    )
    done = {(r["handler"], r["event_id"]) for r in rows}
    return sum(1 for e in ids if all((h, e) in done for h in HANDLERS))


@pytest.mark.chaos
@pytest.mark.parametrize("fault", ["black_hole", "ledger_lock"])
@pytest.mark.timeout(600 if CHAOS_FULL else 180)
async def test_store_hang_pauses_and_resumes_without_loss(
    fault: str, postgres: str, rabbit: RabbitAdmin, tmp_path: Path
) -> None:
    report = ChaosReport(f"store_hang_{fault}")
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    schema = f"chaos_hang_{uuid.uuid4().hex[:8]}"
    queue = rabbit.name(f"hang-{fault}")
    await rabbit.queue(queue)
    store = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres?schema={schema}"
    proc, record = recording_bridge(config(tmp_path, store, rabbit.url, queue), tmp_path)
    # A direct session (not through the proxy): it takes the lock, and reads the ledger.
    admin = await asyncpg.connect(POSTGRES_URL)
    load = Load(rabbit, queue)
    api_ids = [f"api-{fault}-{n}" for n in range(20)]
    samples: list[tuple[float, bool | None, int]] = []  # (answered at, ready, executed)
    watching = asyncio.Event()

    async def watch() -> None:
        async with aiohttp.ClientSession() as session:
            while not watching.is_set():
                ready = await readyz(session, proc.url)
                samples.append((time.monotonic(), ready, executed(record)))
                await asyncio.sleep(0.25)

    proc.start()
    publisher = watcher = None
    lock: asyncpg.transaction.Transaction | None = None
    try:
        await proc.wait_ready()
        publisher = asyncio.create_task(load.run())
        watcher = asyncio.create_task(watch())
        await asyncio.sleep(WARM)

        hung_at = time.monotonic()
        if fault == "black_hole":
            proxy.black_hole()
        else:
            lock = admin.transaction()
            await lock.start()
            await admin.execute(f'LOCK TABLE "{schema}".ledger IN ACCESS EXCLUSIVE MODE')
        report.faults.append(f"store {fault} for {OUTAGE:g}s")
        events = [cloudevent(i, "test/item", {}, "chaos") for i in api_ids]
        async with aiohttp.ClientSession() as session:
            posted = time.monotonic()
            api_during, _ = await post_events(session, proc.url, events)
            api_answered_in = time.monotonic() - posted
        await asyncio.sleep(max(0.0, hung_at + OUTAGE - 1.5 - time.monotonic()))
        # Just before the end: how many messages has the broker let go (acked), and how
        # many has the ledger recorded on every handler?
        load.running.clear()
        await asyncio.sleep(0.2)
        published = set(load.published)
        acked = len(published) - await asyncio.to_thread(queue_messages, queue)
        recorded = await fully_recorded(admin, schema, published)
        load.running.set()
        await asyncio.sleep(max(0.0, hung_at + OUTAGE - time.monotonic()))
        if lock is not None:
            await lock.rollback()
        proxy.restore()
        back_at = time.monotonic()

        await until(
            lambda: any(t > back_at and r for t, r, _ in samples), 120, "/readyz true again"
        )
        ready_again = next(t for t, r, _ in samples if t > back_at and r) - back_at
        executed_at_back = executed(record)
        await until(lambda: executed(record) > executed_at_back, 120, "handlers running again")
        resumed = time.monotonic() - back_at
        async with aiohttp.ClientSession() as session:
            api_after, _ = await post_events(session, proc.url, events)
        await asyncio.sleep(AFTER)
        load.stop.set()
        await publisher
        sent = set(load.published) | set(api_ids)

        def all_done() -> bool:
            runs = ran(record)
            return all(sent <= set(runs[h]) for h in HANDLERS)

        await until(all_done, 300, "every message run on every handler", watch=[proc])
        drained = time.monotonic() - back_at
        watching.set()
        await watcher
        assert await proc.stop() == 0, proc.log_tail()
    finally:
        load.stop.set()
        load.running.set()
        watching.set()
        proxy.restore()
        for task in (publisher, watcher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        proc.kill()
        with contextlib.suppress(Exception):
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
        await proxy.close()

    runs = ran(record)
    lost = {h: sent - set(runs[h]) for h in HANDLERS}
    duplicates = sum(len(runs[h]) - len(set(runs[h])) for h in HANDLERS)
    not_ready_after = next((t - hung_at for t, r, _ in samples if t > hung_at and r is False), None)
    during = [s for s in samples if hung_at + NOT_READY_WITHIN <= s[0] <= hung_at + OUTAGE]
    paused = [s for s in samples if hung_at + SETTLE <= s[0] <= hung_at + OUTAGE]
    executed_during = paused[-1][2] - paused[0][2] if paused else -1

    report.sent = len(sent)
    report.delivered = sum(1 for e in sent if all(e in set(runs[h]) for h in HANDLERS))
    report.lost = sum(len(v) for v in lost.values())
    report.duplicates = duplicates
    report.recovery_seconds = [round(ready_again, 2), round(resumed, 2)]
    report.extra = {
        "outage_seconds": OUTAGE,
        "max_in_flight": MAX_IN_FLIGHT,
        "readyz_false_after_seconds": (
            None if not_ready_after is None else round(not_ready_after, 2)
        ),
        "readyz_samples_during": len(during),
        "readyz_true_during": sum(1 for _, r, _ in during if r),
        "readyz_unanswered_during": sum(1 for _, r, _ in during if r is None),
        "handler_executions_during": executed_during,
        "acked_by_end": acked,
        "fully_recorded_by_end": recorded,
        "event_api_status_during": api_during,
        "event_api_answered_in_seconds": round(api_answered_in, 2),
        "event_api_status_after": api_after,
        "ready_seconds_after": round(ready_again, 2),
        "resumed_seconds_after": round(resumed, 2),
        "drained_seconds_after": round(drained, 2),
    }
    report.write()

    assert lost == {h: set() for h in HANDLERS}
    assert not_ready_after is not None and not_ready_after < NOT_READY_WITHIN, report.extra
    assert during and not any(r for _, r, _ in during), "/readyz must stay false while hung"
    # Intake pauses: only runs already past their ledger read when the store hung may
    # finish (at RATE, OUTAGE seconds of intake would be thousands).
    assert 0 <= executed_during <= MAX_IN_FLIGHT * len(HANDLERS)
    assert acked <= recorded, "a message was acked that the ledger had not recorded"
    # The event API answers within its store deadline: refused when the inbox is out of
    # reach; with only the ledger locked, accepted, or refused when every pool connection
    # is waiting on the lock.
    assert api_during in ((503,) if fault == "black_hole" else (202, 503))
    assert api_answered_in < OUTAGE
    assert api_after == 202
    # Runs past their ledger read when the store hung could not be recorded, and ran again
    # after it; nothing else repeats.
    assert duplicates <= MAX_IN_FLIGHT * len(HANDLERS)
