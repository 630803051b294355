"""Chaos on NATS JetStream (scenario ``nats_sigkill``): ``bridge run`` SIGKILLed mid-stream
while it consumes a stream through a durable pull consumer with ``ordering: key``.

0 lost; repeated executions of a handler <= kills x ``max_in_flight`` (what was held,
unacked, at a kill comes back after ``ack_wait``); per key (the subject), the first
executions follow the stream sequence. Full size (``make chaos``): 50,000 messages,
3 kills; small (``make test``): 3,000 messages, 1 kill.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from tests.chaos.report import ChaosReport
from tests.chaos.tally import Tally
from tests.conftest import CHAOS_FULL
from tests.fixtures.nats import JetStreamAdmin
from tests.support import READY_WITHIN, line_count, recorder, recording_bridge, until, write_config

pytestmark = pytest.mark.chaos

HANDLERS = ("a", "b")
KEYS = 50
MAX_IN_FLIGHT = 300


def key_of(n: int) -> str:
    return f"k{n % KEYS}"


def nats_connector(url: str, stream: str, subject: str) -> dict[str, object]:
    return {
        "type": "nats",
        "servers": [url],
        "reconnect_wait": "200ms",
        "consume": {
            "stream": stream,
            "durable": "chaos",
            "subjects": [f"{subject}.>"],
            "declare": {},
            "ack_wait": "2s",  # what a killed bridge held comes back after this
            "ordering": "key",
            "max_in_flight": MAX_IN_FLIGHT,
            "event": {"type": "test/msg"},
        },
    }


async def _acked(jetstream: JetStreamAdmin, stream: str) -> bool:
    return await jetstream.pending(stream, "chaos") == (0, 0)


@pytest.mark.timeout(1800 if CHAOS_FULL else 90)
async def test_sigkilled_mid_stream_loses_nothing_and_keeps_key_order(
    jetstream: JetStreamAdmin, tmp_path: Path
) -> None:
    # Small: 3,000, so the kill lands a second from the end, not 0.2 s (the bridge got faster).
    total = 50_000 if CHAOS_FULL else 3_000
    kills = 3 if CHAOS_FULL else 1
    report = ChaosReport("nats_sigkill", sent=total)
    report.extra.update(keys=KEYS, handlers=len(HANDLERS), kills=kills)
    report.extra["max_in_flight"] = MAX_IN_FLIGHT
    stream, subject = await jetstream.stream()
    for start in range(0, total, 500):
        await asyncio.gather(
            *(
                jetstream.js.publish(f"{subject}.{key_of(n)}", orjson.dumps({"seq": n}))
                for n in range(start, min(start + 500, total))
            )
        )
    config = write_config(
        tmp_path,
        connectors={"nats": nats_connector(jetstream.url, stream, subject)},
        handlers=[recorder(h, on="test/msg") for h in HANDLERS],
    )
    executions = total * len(HANDLERS)
    bridge, record = recording_bridge(config, tmp_path)
    bridge.start()
    try:
        await bridge.wait_ready(READY_WITHIN)
        for i in range(kills):
            target = int(executions * (i + 1) / (kills + 2))
            await until(
                lambda t=target: line_count(record) >= t,  # type: ignore[misc]
                600,
                f"{target} executions",
                watch=[bridge],
                every=0.05,
            )
            bridge.kill()
            killed_at, done = time.monotonic(), line_count(record)
            assert done < executions, "the kill came after the stream had finished"
            report.faults.append(f"SIGKILL after {done} of {executions} executions")
            bridge.start()
            await until(
                lambda d=done: line_count(record) > d,  # type: ignore[misc]
                120,
                "work after the restart",
                watch=[bridge],
                every=0.1,
            )
            report.recovery_seconds.append(round(time.monotonic() - killed_at, 2))
        await until(
            lambda: (
                line_count(record) >= executions and Tally.of(record).missing(HANDLERS, total) == 0
            ),
            900,
            "every message through every handler",
            every=0.5,
            watch=[bridge],
        )
        await until(lambda: _acked(jetstream, stream), 30, "every message acked", watch=[bridge])
        report.dead_lettered = len(await bridge.dead_letters(limit="1000"))
        assert bridge.terminate() == 0
    finally:
        bridge.kill()

    tally = Tally.of(record)
    report.delivered = tally.delivered(HANDLERS, total)
    report.lost = tally.missing(HANDLERS, total)
    per_handler = {h: tally.duplicates(h) for h in HANDLERS}
    report.duplicates = sum(per_handler.values())
    violations = {h: tally.order_violations(h, key_of) for h in HANDLERS}
    pending = await jetstream.pending(stream, "chaos")
    report.extra.update(
        duplicates_per_handler=per_handler,
        duplicate_bound_per_handler=kills * MAX_IN_FLIGHT,
        order_violations=violations,
        consumer_pending_after=pending,
    )
    report.write()

    assert report.lost == 0
    for handler, repeated in per_handler.items():
        assert repeated <= kills * MAX_IN_FLIGHT, (handler, repeated)
    assert violations == dict.fromkeys(HANDLERS, 0)
    assert report.dead_lettered == 0
    assert pending == (0, 0), "every message acked on the consumer"
