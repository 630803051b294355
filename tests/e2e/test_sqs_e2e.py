"""The ``bridge`` command on moto's SQS server: SIGKILL mid-stream, a handler slower
than the visibility timeout, FIFO order with a poison message, and a publish round
trip through the SQS publisher."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import CHAOS_FULL
from tests.fixtures.sqs import SqsKit
from tests.support import (
    BridgeProcess,
    executions,
    post_events,
    read_lines,
    recorder,
    recording_bridge,
    seen,
    sigkill_mid_stream,
    sqs_connector,
    until,
    write_config,
)

pytestmark = pytest.mark.e2e


def bridge_config(
    tmp_path: Path,
    queue: str,
    handlers: list[dict[str, Any]],
    **consume: Any,
) -> Path:
    """A config consuming ``queue`` from moto (endpoint from ``${SQS_ENDPOINT}``)."""
    connectors = {
        "jobs": sqs_connector(queue, **consume),
        "out": {"type": "sqs", "endpoint_url": "${SQS_ENDPOINT}"},
    }
    return write_config(tmp_path, connectors=connectors, handlers=handlers)


def bridge(
    tmp_path: Path, config: Path, sqs_env: dict[str, str], **env: str
) -> tuple[BridgeProcess, Path]:
    return recording_bridge(config, tmp_path, **sqs_env, **env)


class Feeder:
    """Sends ``total`` messages ``{"seq": n}``, keeping at most ``backlog`` in the queue
    (moto's receives and sends slow down as a queue grows)."""

    def __init__(self, sqs: SqsKit, url: str, total: int, backlog: int = 300) -> None:
        self.sqs, self.url, self.total, self.backlog = sqs, url, total, backlog
        self.sent = 0

    async def run(self) -> None:
        while self.sent < self.total:
            visible, hidden = await self.sqs.depth(self.url)
            if visible + hidden >= self.backlog:
                await asyncio.sleep(0.2)
                continue
            chunk = range(self.sent, min(self.sent + 100, self.total))
            await self.sqs.send(self.url, [json.dumps({"seq": n}) for n in chunk])
            self.sent = chunk.stop


# --------------------------------------------------------------------------- SIGKILL


@pytest.mark.timeout(300)
async def test_sigkill_mid_stream_loses_nothing(
    sqs: SqsKit, sqs_env: dict[str, str], tmp_path: Path
) -> None:
    # The size under `make chaos`; `make test` sends 600: the kill still lands with
    # 400 to go (checked below), and a SIGKILL loses the same things at any size.
    total = 2_000 if CHAOS_FULL else 600
    max_in_flight = 100
    url = await sqs.queue("kill", visibility=5)
    config = bridge_config(
        tmp_path, url, [recorder("a"), recorder("b")], max_in_flight=max_in_flight
    )
    proc, record = bridge(tmp_path, config, sqs_env)
    feeder = Feeder(sqs, url, total)
    feeding = asyncio.create_task(feeder.run())
    proc.start()
    try:
        done_before = await sigkill_mid_stream(proc, record, total)
        await feeding
        await sqs.wait_empty(url)
        assert proc.terminate() == 0
    finally:
        feeding.cancel()
        with contextlib.suppress(BaseException):
            await feeding
        proc.kill()
    runs = executions(record)
    everything = {str(n) for n in range(total)}
    for handler in ("a", "b"):
        keys = Counter(key for _, key in runs[handler])
        assert set(keys) == everything  # 0 lost
        repeated = sum(count - 1 for count in keys.values())
        # The ledger stops re-runs of what had succeeded; only what was in flight at the kill repeats.
        assert repeated <= max_in_flight, (handler, repeated)
        assert done_before[handler] < total
        assert {gen for gen, _ in runs[handler]} == {1, 2}


# --------------------------------------------------------------------------- visibility heartbeat


async def test_handler_slower_than_visibility_timeout_runs_once(
    sqs: SqsKit, sqs_env: dict[str, str], tmp_path: Path
) -> None:
    """Handlers take 3x the visibility timeout; a competing consumer gets nothing."""
    count = 4
    url = await sqs.queue("slow", visibility=2)
    # One receiver and no free slot while the four are held: only the heartbeat keeps
    # them from the competing consumer below.
    config = bridge_config(
        tmp_path,
        url,
        [recorder("slow", "slow", timeout="30s")],
        receivers=1,
        max_in_flight=count,
        visibility_timeout=2,
    )
    proc, record = bridge(tmp_path, config, sqs_env, BRIDGE_TEST_SLOW_SECONDS="6")
    proc.start()
    try:
        await proc.wait_ready()
        await sqs.send(url, [json.dumps({"seq": n}) for n in range(count)])

        async def all_held() -> bool:
            return await sqs.depth(url) == (0, count)

        await until(all_held, 10, "the bridge holds every message")
        stolen = 0

        async def competitor() -> None:
            nonlocal stolen
            while True:
                response = await sqs.client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30
                )
                stolen += len(response.get("Messages") or [])

        thief = asyncio.create_task(competitor())
        try:
            await until(lambda: len(seen(record, "slow")) == count, 60, "every message handled")
        finally:
            thief.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await thief
        await sqs.wait_empty(url)
        # The queue depth reaches the metrics (for HPA / KEDA on the backlog).
        name = url.rsplit("/", 1)[1]
        lag = f'bridge_source_lag{{connector="jobs",part="{name}"}}'

        await until(lambda: proc.metrics_have(lag), 15, "the queue depth in /metrics")
        assert proc.terminate() == 0
    finally:
        proc.kill()
    runs = executions(record)["slow"]
    assert sorted(key for _, key in runs) == [str(n) for n in range(count)]  # once each
    assert stolen == 0


# --------------------------------------------------------------------------- FIFO


async def test_fifo_order_per_group_and_poison_is_dead_lettered(
    sqs: SqsKit, sqs_env: dict[str, str], tmp_path: Path
) -> None:
    groups, per_group = 4, 8
    url = await sqs.queue("fifo", fifo=True, visibility=10)
    for g in range(groups):
        bodies = []
        for n in range(per_group):
            body: dict[str, Any] = {"key": f"g{g}-{n}"}
            if (g, n) == (1, 3):
                body["poison"] = True
            bodies.append(json.dumps(body))
        await sqs.send(url, bodies, group=f"g{g}")
    retry = {"attempts": 2, "backoff": "fixed", "min_delay": "100ms"}
    config = bridge_config(
        tmp_path, url, [recorder("p", "poison", retry=retry)], receivers=2, visibility_timeout=10
    )
    proc, record = bridge(tmp_path, config, sqs_env)
    proc.start()
    try:
        await proc.wait_ready()
        expected = {f"g{g}-{n}" for g in range(groups) for n in range(per_group)} - {"g1-3"}
        await until(lambda: seen(record, "p") >= expected, 60, "every good message handled")
        await sqs.wait_empty(url)
        letters = await proc.dead_letters(handler="p")
        assert proc.terminate() == 0
    finally:
        proc.kill()
    keys = [key for _, key in executions(record)["p"]]
    assert keys.count("poison") == 2  # both attempts, then a dead letter
    assert [letter["event"]["data"]["key"] for letter in letters] == ["g1-3"]
    for g in range(groups):
        mine = [k for k in keys if k.startswith(f"g{g}-")]
        want = [f"g{g}-{n}" for n in range(per_group) if (g, n) != (1, 3)]
        assert mine == want  # in order, once each; g1 went on after its poison message


# --------------------------------------------------------------------------- publish round trip


async def test_publish_round_trip_through_sqs(
    sqs: SqsKit, sqs_env: dict[str, str], tmp_path: Path
) -> None:
    """Events posted to the API are published to a queue by one handler and consumed
    back by the same bridge: none lost, none doubled, the CloudEvent ids kept (trace
    context and correlation ids are checked in tests/integration/test_sqs.py)."""
    url = await sqs.queue("roundtrip")
    handlers = [
        {
            "id": "forward",
            "on": "test/item",
            "type": "publish",
            "connector": "out",
            "destination": url,
            "filter": "!('sqs.message_id' in event.transport)",
        },
        recorder("back", filter="'sqs.message_id' in event.transport"),
    ]
    config = bridge_config(tmp_path, url, handlers)
    proc, record = bridge(tmp_path, config, sqs_env)
    events = [
        {
            "specversion": "1.0",
            "id": f"rt-{uuid.uuid4().hex[:8]}-{n}",
            "source": "test://e2e",
            "type": "test/item",
            "correlationid": f"corr-{n}",
            "traceparent": f"00-{n + 1:032x}-{n + 1:016x}-01",
            "data": {"seq": n},
        }
        for n in range(50)
    ]
    proc.start()
    try:
        await proc.wait_ready()
        async with aiohttp.ClientSession() as session:
            status, _ = await post_events(session, proc.url, events)
            assert status == 202
        everything = {str(n) for n in range(len(events))}
        await until(lambda: seen(record, "back") == everything, 60, "every event consumed back")
        await sqs.wait_empty(url)
        assert proc.terminate() == 0
    finally:
        proc.kill()
    lines = [line.split(" ") for line in read_lines(record)]
    back = {event_id for _, handler, event_id, _, _ in lines if handler == "back"}
    assert back == {e["id"] for e in events}  # the CloudEvent id survived the queue
    assert len([1 for _, handler, *_ in lines if handler == "back"]) == len(events)
