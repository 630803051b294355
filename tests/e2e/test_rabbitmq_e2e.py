"""The ``bridge`` command on the real RabbitMQ: SIGKILL mid-stream, broker connections
closed and the broker app restarted mid-stream, a poison message, and a publish
round trip through the confirming publisher."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from tests.conftest import CHAOS_FULL
from tests.fixtures.rabbitmq import RabbitAdmin, ensure_rabbitmq_up, rabbitmqctl
from tests.support import (
    BridgeProcess,
    executions,
    rabbitmq_connector,
    recorder,
    recording_bridge,
    seen,
    sigkill_mid_stream,
    until,
    write_config,
)

pytestmark = pytest.mark.e2e


def bridge_config(
    tmp_path: Path,
    url: str,
    queue: str,
    handlers: list[dict[str, Any]],
    *,
    declare: dict[str, Any] | None = None,
    max_in_flight: int = 200,
) -> Path:
    """Write a config consuming ``queue`` (declared durable by the bridge) into tmp_path."""
    connector = rabbitmq_connector(
        url,
        queue,
        max_in_flight=max_in_flight,
        health_interval="1s",
        declare=declare or {"durable": True},
    )
    return write_config(tmp_path, connectors={"rabbit": connector}, handlers=handlers)


def items(start: int, stop: int) -> list[tuple[bytes, dict[str, Any]]]:
    return [(json.dumps({"seq": n}).encode(), {"message_id": f"m{n}"}) for n in range(start, stop)]


# --------------------------------------------------------------------------- SIGKILL


@pytest.mark.timeout(300)
async def test_sigkill_mid_stream_loses_nothing(rabbit: RabbitAdmin, tmp_path: Path) -> None:
    # The size under `make chaos`; `make test` publishes 4,000: the kill lands after
    # a third with 2,600 to go (checked below), far more than the 200 in flight.
    total = 20_000 if CHAOS_FULL else 4_000
    queue = rabbit.name("kill")
    rabbit.track_queue(queue)
    max_in_flight = 200
    config = bridge_config(
        tmp_path,
        rabbit.url,
        queue,
        [recorder("a"), recorder("b")],
        max_in_flight=max_in_flight,
    )
    proc, record = recording_bridge(config, tmp_path)
    await rabbit.queue(queue)  # declared as the bridge declares it, so it can fill first
    await rabbit.publish_many(queue, items(0, total))
    proc.start()
    try:
        done_before = await sigkill_mid_stream(proc, record, total)
        assert proc.terminate() == 0
    finally:
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
    assert await rabbit.depth(queue) == (0, 0)


# --------------------------------------------------------------------------- broker restarts


class Stream:
    """Publishes ``total`` messages at a steady pace through a robust connection,
    retrying each until the broker confirms it (the broker may be down meanwhile)."""

    def __init__(self, url: str, queue: str, total: int, per_second: float) -> None:
        self.url, self.queue, self.total, self.pause = url, queue, total, 1.0 / per_second
        self.confirmed = 0

    async def run(self) -> None:
        connection = await aio_pika.connect_robust(self.url, reconnect_interval=0.5)
        try:
            channel = await connection.channel(publisher_confirms=True)
            for n in range(self.total):
                body, props = items(n, n + 1)[0]
                while True:
                    try:
                        async with asyncio.timeout(5):
                            await channel.default_exchange.publish(
                                aio_pika.Message(
                                    body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **props
                                ),
                                routing_key=self.queue,
                            )
                        break
                    except Exception:  # broker away: publish it again once it is back
                        await asyncio.sleep(0.2)
                self.confirmed += 1
                await asyncio.sleep(self.pause)
        finally:
            await connection.close()


@pytest.mark.alone  # close_all_connections and stop_app hit every client of the broker
@pytest.mark.timeout(300)
async def test_broker_connection_loss_and_restart_lose_nothing(
    rabbit: RabbitAdmin, tmp_path: Path
) -> None:
    total = 6_000 if CHAOS_FULL else 2_000
    queue = rabbit.name("restart")
    rabbit.track_queue(queue)
    config = bridge_config(tmp_path, rabbit.url, queue, [recorder("a"), recorder("b")])
    proc, record = recording_bridge(config, tmp_path)
    proc.start()
    stream = Stream(rabbit.url, queue, total, per_second=total / 20)
    publishing: asyncio.Task[None] | None = None
    try:
        await proc.wait_ready()
        publishing = asyncio.create_task(stream.run())

        def processed() -> int:
            return len(seen(record, "a"))

        await until(lambda: processed() >= total // 10, 60, "the stream flowing")

        # 1. every connection closed by the broker
        mark = processed()
        rabbitmqctl("close_all_connections", "chaos test")
        await until(lambda: processed() >= mark + total // 20, 30, "consuming resumed after close")
        await until(proc.ready, 30, "/readyz true after close_all_connections")

        # 2. the broker app stopped and started again
        try:
            rabbitmqctl("stop_app")
            await until(lambda: _not(proc.ready()), 30, "/readyz false while the broker is down")
            mark = processed()
        finally:
            rabbitmqctl("start_app")
            ensure_rabbitmq_up()
        await until(proc.ready, 30, "/readyz true after start_app")
        await until(
            lambda: processed() >= mark + total // 20, 30, "consuming resumed after restart"
        )
        _, consumers = await rabbit.depth(queue)
        assert consumers == 1  # not the zero-consumer state aio-pika can end up in

        await asyncio.wait_for(publishing, 120)
        everything = {str(n) for n in range(total)}
        await until(
            lambda: seen(record, "a") == everything and seen(record, "b") == everything,
            60,
            "every message processed by both handlers",
        )
        assert proc.proc is not None
        assert proc.proc.poll() is None  # never restarted
        assert proc.terminate() == 0
    finally:
        if publishing is not None and not publishing.done():
            publishing.cancel()
            await asyncio.gather(publishing, return_exceptions=True)
        ensure_rabbitmq_up()
        proc.kill()
    runs = executions(record)
    assert stream.confirmed == total
    for handler in ("a", "b"):
        assert {key for _, key in runs[handler]} == everything  # 0 lost
        assert {gen for gen, _ in runs[handler]} == {1}  # one bridge process throughout
    assert await rabbit.depth(queue) == (0, 0)


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


# --------------------------------------------------------------------------- poison


async def test_poison_message_is_dead_lettered_while_the_rest_flow(
    rabbit: RabbitAdmin, tmp_path: Path
) -> None:
    total, poison_at = 200, 57
    queue = rabbit.name("poison")
    rabbit.track_queue(queue)
    dlx = await rabbit.exchange(rabbit.name("dlx"), "topic")
    dead = await rabbit.queue()
    await rabbit.bind(dead, dlx, "#")
    fast_retry = {"attempts": 3, "backoff": "fixed", "min_delay": "10ms", "max_delay": "10ms"}
    handlers = [
        recorder("ok"),
        recorder(
            "picky",
            "poison",
            retry=fast_retry,
            dead_letter={"connector": "rabbit", "destination": f"{dlx}/dead.picky"},
        ),
    ]
    declare = {
        "durable": True,
        "arguments": {"x-dead-letter-exchange": dlx},
        "exchanges": [{"name": dlx, "type": "topic"}],
    }
    config = bridge_config(tmp_path, rabbit.url, queue, handlers, declare=declare)
    proc, record = recording_bridge(config, tmp_path)
    proc.start()
    try:
        await proc.wait_ready()
        messages = items(0, total)
        messages[poison_at] = (
            json.dumps({"seq": poison_at, "poison": True}).encode(),
            {"message_id": f"m{poison_at}"},
        )
        messages.append((b"{not json", {"message_id": "malformed"}))
        await rabbit.publish_many(queue, messages)
        everything = {str(n) for n in range(total)}
        await until(
            lambda: (
                seen(record, "ok") == everything
                and seen(record, "picky") == (everything - {str(poison_at)}) | {"poison"}
            ),
            60,
            "all messages handled",
        )
        letters = await rabbit.get_all(dead, expect=1)
        await until(lambda: _letters_count(proc, 2), 30, "two dead letters stored")
        stored = await proc.dead_letters()
        await until(lambda: _depth_is(rabbit, queue, 0), 30, "the source queue drained")
        assert proc.terminate() == 0
    finally:
        proc.kill()
    attempts = [a for g, a in executions(record)["picky"] if a == "poison"]
    assert len(attempts) == 3  # every attempt of the poison run, no more
    by_handler = {letter["handler"]: letter for letter in stored}
    assert set(by_handler) == {"picky", None}
    assert len(by_handler["picky"]["attempts"]) == 3
    assert by_handler["picky"]["event"]["data"] == {"seq": poison_at, "poison": True}
    assert by_handler[None]["reason"].startswith("malformed_json")
    assert (
        len(letters) == 1
    )  # the run's copy went to the queue's DLX; the bad input is in the store
    (letter,) = letters
    assert letter.routing_key == "dead.picky"
    assert letter.headers["bridge-handler"] == "picky"
    assert letter.headers["bridge-dead-letter-id"] == by_handler["picky"]["id"]
    assert json.loads(letter.body)["data"] == {"seq": poison_at, "poison": True}
    assert await rabbit.depth(queue) == (0, 0)


async def _letters_count(proc: BridgeProcess, count: int) -> bool:
    return len(await proc.dead_letters()) >= count


async def _depth_is(rabbit: RabbitAdmin, queue: str, messages: int) -> bool:
    return (await rabbit.depth(queue))[0] == messages


# --------------------------------------------------------------------------- publish


async def test_publish_round_trip_keeps_headers_and_trace(
    rabbit: RabbitAdmin, tmp_path: Path
) -> None:
    total = 300
    inbound = rabbit.name("in")
    rabbit.track_queue(inbound)
    exchange = await rabbit.exchange(type_="topic")
    outbound = await rabbit.queue()
    await rabbit.bind(outbound, exchange, "out.#")
    handlers = [
        {
            "id": "forward",
            "on": "test/item",
            "type": "publish",
            "connector": "rabbit",
            "destination": f"{exchange}/out.item",
        }
    ]
    config = bridge_config(tmp_path, rabbit.url, inbound, handlers)
    proc, _ = recording_bridge(config, tmp_path)
    proc.start()
    try:
        await proc.wait_ready()
        sent = []
        for n in range(total):
            trace = f"00-{n + 1:032x}-{n + 7:016x}-01"
            props = {"message_id": f"m{n}", "correlation_id": f"flow-{n}"}
            sent.append(
                (json.dumps({"seq": n}).encode(), {**props, "headers": {"traceparent": trace}})
            )
        await rabbit.publish_many(inbound, sent)
        got = await rabbit.get_all(outbound, expect=total, within=60)
        # The queue depth reaches the metrics (the source's probe, then the runtime's export).
        depth_line = f'bridge_source_lag{{connector="rabbit",part="{inbound}"}} 0'
        await until(lambda: proc.metrics_have(depth_line), 30, "the queue depth in /metrics")
        assert proc.terminate() == 0
    finally:
        proc.kill()
    assert len(got) == total  # nothing lost, nothing doubled
    by_seq = {json.loads(m.body)["seq"]: m for m in got}
    assert sorted(by_seq) == list(range(total))
    for n, message in by_seq.items():
        assert message.headers["traceparent"] == f"00-{n + 1:032x}-{n + 7:016x}-01"
        assert message.headers["x-correlation-id"] == f"flow-{n}"
        assert message.correlation_id == f"flow-{n}"
        assert message.message_id == f"m{n}" == message.headers["cloudEvents:id"]
        assert message.headers["cloudEvents:type"] == "test/item"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.content_type == "application/json"
    assert await rabbit.depth(inbound) == (0, 0)
