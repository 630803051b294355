"""Chaos on RabbitMQ (scenario ``rabbitmq_faults``): the bridge's connections closed by
the broker, and (full size only) the broker app stopped and started, while a stream
flows through one ``bridge run``. 0 lost; consuming resumes within 30 s of each fault.

Closing: ``rabbitmqctl close_connection`` on the bridge's own connections only (found
from the bridge process's sockets), so other tests sharing this broker are not hit.
The app restarts (``rabbitmqctl stop_app`` / ``start_app``) do hit everything on the
broker, so they run only at full size (``make chaos``), with ``start_app`` in a finally.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

import aio_pika
import orjson
import psutil
import pytest

from tests.chaos.report import ChaosReport
from tests.chaos.tally import Tally
from tests.conftest import CHAOS_FULL
from tests.fixtures.rabbitmq import PORT, RabbitAdmin, ensure_rabbitmq_up, rabbitmqctl
from tests.support import (
    READY_WITHIN,
    line_count,
    rabbitmq_connector,
    recorder,
    recording_bridge,
    until,
    write_config,
)

# At full size the app restarts hit every client of the broker: no other test meanwhile.
pytestmark = [pytest.mark.chaos, *([pytest.mark.alone] if CHAOS_FULL else [])]

HANDLERS = ("a", "b")
MAX_IN_FLIGHT = 200
RESUME_WITHIN = 30.0


def bridge_config(tmp_path: Path, url: str, queue: str) -> Path:
    connector = rabbitmq_connector(
        url,
        queue,
        max_in_flight=MAX_IN_FLIGHT,
        health_interval="1s",
        declare={"durable": True},
    )
    return write_config(
        tmp_path, connectors={"rabbit": connector}, handlers=[recorder(h) for h in HANDLERS]
    )


def close_connections_of(pid: int) -> int:
    """Have the broker close every AMQP connection of process ``pid``; returns how many."""
    ports = {
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == PORT
    }
    listed = rabbitmqctl("list_connections", "-q", "--no-table-headers", "pid", "peer_port")
    closed = 0
    for line in listed.splitlines():
        conn_pid, _, peer = line.partition("\t")
        if peer.strip().isdigit() and int(peer) in ports:
            # The connection may be gone already (closed by its client): not an error.
            with contextlib.suppress(RuntimeError):
                rabbitmqctl("close_connection", conn_pid, "chaos test")
                closed += 1
    return closed


class Publisher:
    """Publishes ``{"seq": n}`` for ``n < total`` with confirms, in chunks, at most
    ``rate`` per second and never past ``allowed``; a chunk that fails (broker away) is
    published again, so a message may sit twice in the queue (same ``message_id``)."""

    def __init__(self, url: str, queue: str, total: int, rate: float) -> None:
        self.url, self.queue, self.total, self.rate = url, queue, total, rate
        self.published = 0
        self.allowed = 0
        self.republished_chunks = 0

    async def run(self) -> None:
        connection = await aio_pika.connect_robust(self.url, reconnect_interval=0.5)
        started = time.monotonic()
        try:
            channel = await connection.channel(publisher_confirms=True)
            while self.published < self.total:
                ahead = self.published / self.rate - (time.monotonic() - started)
                if ahead > 0 or self.published >= self.allowed:
                    await asyncio.sleep(max(ahead, 0.05))
                    continue
                chunk = range(self.published, min(self.published + 100, self.total))
                try:
                    async with asyncio.timeout(10):
                        await asyncio.gather(
                            *(
                                channel.default_exchange.publish(
                                    aio_pika.Message(
                                        orjson.dumps({"seq": n}),
                                        message_id=f"m{n}",
                                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                    ),
                                    routing_key=self.queue,
                                )
                                for n in chunk
                            )
                        )
                except Exception:  # the broker is away: the chunk goes again once it is back
                    self.republished_chunks += 1
                    await asyncio.sleep(0.5)
                    continue
                self.published = chunk.stop
        finally:
            with contextlib.suppress(Exception):
                await connection.close()


@pytest.mark.timeout(1800 if CHAOS_FULL else 120)
async def test_connections_closed_and_broker_restarted_lose_nothing(
    rabbit: RabbitAdmin, tmp_path: Path
) -> None:
    if CHAOS_FULL:
        total, rate = 50_000, 1_000.0
        faults = ["close", "close", "restart", "close", "close", "restart", "close"]
    else:  # closes only: an app restart would disrupt other tests on the shared broker
        total, rate = 3_000, 300.0
        faults = ["close", "close"]
    report = ChaosReport("rabbitmq_faults", sent=total)
    report.extra.update(handlers=len(HANDLERS), max_in_flight=MAX_IN_FLIGHT, rate_per_second=rate)
    queue = rabbit.name("chaos")
    await rabbit.queue(queue)
    config = bridge_config(tmp_path, rabbit.url, queue)
    proc, record = recording_bridge(config, tmp_path)
    publisher = Publisher(rabbit.url, queue, total, rate)
    points = [total * (i + 1) / (len(faults) + 2) for i in range(len(faults))]
    # Room to publish up to a bit past the next fault point, not beyond: the stream flows
    # through every fault.
    publisher.allowed = int(points[0] + total * 0.1)
    leftovers = len(HANDLERS) * MAX_IN_FLIGHT  # lines runs in flight at a fault may still add

    def handled() -> int:
        return line_count(record) // len(HANDLERS)

    publishing = asyncio.create_task(publisher.run())
    proc.start()
    try:
        await proc.wait_ready(READY_WITHIN)
        for i, (kind, point) in enumerate(zip(faults, points, strict=True)):
            await until(
                lambda p=point: handled() >= p,  # type: ignore[misc]
                300,
                f"{point} handled",
                watch=[proc],
                every=0.2,
            )
            assert proc.proc is not None
            if kind == "close":
                closed = close_connections_of(proc.proc.pid)
                assert closed >= 1, "the bridge had no connection to close"
                report.faults.append(f"closed {closed} connection(s) after {handled()} handled")
            else:
                try:
                    rabbitmqctl("stop_app")
                    await asyncio.sleep(3)  # down for a while, not a blip
                finally:
                    rabbitmqctl("start_app")
                    ensure_rabbitmq_up()
                report.faults.append(f"broker app restarted after {handled()} handled")
            back_at, mark = time.monotonic(), line_count(record)
            next_point = points[i + 1] if i + 1 < len(points) else total
            publisher.allowed = int(next_point + total * 0.1)
            await until(
                lambda m=mark: line_count(record) > m + leftovers,  # type: ignore[misc]
                RESUME_WITHIN * 2,
                f"consuming to resume after fault {i + 1} ({kind})",
                watch=[proc],
                every=0.2,
            )
            report.recovery_seconds.append(round(time.monotonic() - back_at, 2))
        await asyncio.wait_for(publishing, 600)
        await until(
            lambda: Tally.of(record).missing(HANDLERS, total) == 0,
            600,
            "every message through both handlers",
            every=1.0,
            watch=[proc],
        )
        _, consumers = await rabbit.depth(queue)
        report.extra["consumers_at_end"] = consumers
        report.dead_lettered = len(await proc.dead_letters(limit="1000"))
        assert proc.terminate() == 0
    finally:
        publishing.cancel()
        await asyncio.gather(publishing, return_exceptions=True)
        with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
            ensure_rabbitmq_up()
        proc.kill()

    tally = Tally.of(record)
    report.delivered = tally.delivered(HANDLERS, total)
    report.lost = tally.missing(HANDLERS, total)
    report.duplicates = sum(tally.duplicates(h) for h in HANDLERS)
    report.extra.update(
        republished_chunks=publisher.republished_chunks,
        queue_left=(await rabbit.depth(queue))[0],
        generations=sorted({line.split(" ", 1)[0] for line in record.read_text().splitlines()}),
    )
    report.write()

    assert report.lost == 0
    assert max(report.recovery_seconds) <= RESUME_WITHIN
    assert report.extra["consumers_at_end"] == 1
    assert report.extra["queue_left"] == 0
    assert report.extra["generations"] == ["1"], "the bridge process was restarted"
    assert report.dead_lettered == 0
