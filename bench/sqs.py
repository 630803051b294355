"""Benchmark: the bridge consuming SQS against a raw aiobotocore receive/delete loop,
on the same moto server (server mode, over HTTP), in one run.

Both consume a freshly preloaded queue with the same number of receivers
(``RECEIVERS``), long polling, 10 messages per receive:
    * raw: each receiver loops ``ReceiveMessage`` -> ``DeleteMessageBatch``.
    * bridge: the in-process ``Runtime`` with the ``sqs`` connector (receivers,
      visibility heartbeat, batched deletes), one no-op python handler, the
      ledger in the store, each message deleted once its run is final.
      Measured with the default SQLite store and with the memory store.

moto is the bottleneck here, and its cost per call grows with the queue's size
(every send, receive and delete scans the queue), so every run starts from the
same preloaded size and the figures say more about moto than about SQS.

Throughput: ``MESSAGES`` preloaded messages, from the first message received
(raw) or handled (bridge) until the last one is deleted (raw: the last
``DeleteMessageBatch`` returned; bridge: the queue reads empty, polled every
20 ms after the last run). ``RUNS`` runs of each, alternated; medians reported.
Latency: ``LATENCY_MESSAGES`` sent one by one at ``LATENCY_RATE`` per second;
time from send to receive (raw) or to the handler's run (bridge), p50/p99.

Run: ``.venv/bin/python -m bench.sqs`` (starts its own moto server).
Writes bench/results/sqs.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

MESSAGES = int(os.environ.get("BENCH_SQS_MESSAGES", "200"))
RUNS = int(os.environ.get("BENCH_SQS_RUNS", "7"))
RECEIVERS = int(os.environ.get("BENCH_SQS_RECEIVERS", "4"))
LATENCY_MESSAGES = int(os.environ.get("BENCH_SQS_LATENCY_MESSAGES", "200"))
LATENCY_RATE = float(os.environ.get("BENCH_SQS_LATENCY_RATE", "20"))
RESULTS = Path(__file__).parent / "results" / "sqs.json"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Tracker:
    """Counts handler runs; the no-op handler reports here."""

    def __init__(self) -> None:
        self.reset(0)

    def reset(self, expected: int) -> None:
        self.expected = expected
        self.runs = 0
        self.first: float | None = None
        self.last = 0.0
        self.done = asyncio.Event()
        self.latencies: list[float] = []
        self.track_latency = False

    def hit(self, data: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.runs += 1
        if self.track_latency:
            self.latencies.append(time.time() - data["sent"])
        if self.runs >= self.expected:
            self.last = now
            self.done.set()


TRACKER = Tracker()


async def noop(event: Any, ctx: Any) -> None:
    """A handler that does nothing but count."""
    TRACKER.hit(event.data)


# --------------------------------------------------------------------------- moto


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def moto_server() -> AsyncIterator[str]:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "moto.server",
        "-H",
        "127.0.0.1",
        "-p",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


def body(seq: int) -> str:
    return orjson.dumps(
        {"seq": seq, "email": f"user{seq}@example.com", "sent": time.time()}
    ).decode()


async def new_queue(client: Any) -> str:
    response = await client.create_queue(
        QueueName=f"bench-{uuid.uuid4().hex[:10]}", Attributes={"VisibilityTimeout": "30"}
    )
    return str(response["QueueUrl"])


async def preload(client: Any, url: str, count: int) -> None:
    for start in range(0, count, 10):
        entries = [
            {"Id": str(i), "MessageBody": body(start + i)} for i in range(min(10, count - start))
        ]
        await client.send_message_batch(QueueUrl=url, Entries=entries)


async def depth(client: Any, url: str) -> tuple[int, int]:
    response = await client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attrs = response["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


async def steady(client: Any, url: str) -> None:
    """Send LATENCY_MESSAGES one by one at LATENCY_RATE per second, stamped with the send time."""
    start = time.monotonic()
    for seq in range(LATENCY_MESSAGES):
        delay = start + seq / LATENCY_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await client.send_message(QueueUrl=url, MessageBody=body(seq))


# --------------------------------------------------------------------------- raw


async def raw_consume(client: Any, url: str, count: int, latency: bool = False) -> dict[str, Any]:
    first: float | None = None
    last = 0.0
    deleted = 0
    latencies: list[float] = []
    done = asyncio.Event()

    async def receiver() -> None:
        nonlocal first, last, deleted
        while not done.is_set():
            response = await client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages") or []
            if not messages:
                continue
            now = time.time()
            if first is None:
                first = time.monotonic()
            if latency:
                latencies.extend(now - orjson.loads(m["Body"])["sent"] for m in messages)
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            result = await client.delete_message_batch(QueueUrl=url, Entries=entries)
            if result.get("Failed"):
                raise RuntimeError(f"delete failed: {result['Failed']}")
            deleted += len(messages)
            if deleted >= count:
                last = time.monotonic()
                done.set()

    tasks = [asyncio.create_task(receiver()) for _ in range(RECEIVERS)]
    await done.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"seconds": last - (first or last), "latencies": latencies}


# --------------------------------------------------------------------------- bridge


def bridge_config(endpoint: str, url: str, store: str) -> Any:
    from bridge.config import config_model

    data = {
        "version": 1,
        "store": store,
        "server": {"enabled": False},
        "events": {"bench/*": {"schema": "none"}},
        "connectors": {
            "jobs": {
                "type": "sqs",
                "endpoint_url": endpoint,
                "consume": {
                    "queue": url,
                    "receivers": RECEIVERS,
                    "wait_time_seconds": 1,
                    "max_in_flight": 200,
                    "event": {"type": "bench/item"},
                },
            }
        },
        "handlers": [
            {"id": "noop", "on": "bench/item", "type": "python", "function": "bench.sqs:noop"}
        ],
    }
    return config_model().model_validate({**data, "base_dir": Path(".")})


async def bridge_consume(
    client: Any, endpoint: str, url: str, count: int, store: str, publish: Any = None
) -> dict[str, Any]:
    from bridge.runtime import Runtime

    TRACKER.reset(count)
    TRACKER.track_latency = publish is not None
    runtime = Runtime(bridge_config(endpoint, url, store))
    running = asyncio.create_task(runtime.run())
    try:
        if publish is not None:
            while not runtime.ready:  # consuming before the first send, as the raw loop is
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            await publish
        await TRACKER.done.wait()
        while await depth(client, url) != (0, 0):
            await asyncio.sleep(0.02)
        end = time.monotonic()
    finally:
        runtime.request_stop()
        await running
    return {"seconds": end - (TRACKER.first or end), "latencies": list(TRACKER.latencies)}


# --------------------------------------------------------------------------- driver


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": at(1.0)}


async def main() -> dict[str, Any]:
    import aiobotocore
    import moto
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    os.environ.update(CREDENTIALS)
    tmp = Path(tempfile.mkdtemp(prefix="bench-sqs-"))
    variants = {
        "raw": None,
        "bridge_sqlite": lambda run: f"sqlite:///{tmp}/state-{run}.db",
        "bridge_memory": lambda run: "memory://",
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    latency: dict[str, dict[str, float]] = {}
    async with (
        moto_server() as endpoint,
        get_session().create_client(
            "sqs", endpoint_url=endpoint, config=AioConfig(max_pool_connections=RECEIVERS * 2 + 4)
        ) as client,
    ):
        for run in range(RUNS):
            for name, store in variants.items():
                url = await new_queue(client)
                await preload(client, url, MESSAGES)
                if store is None:
                    result = await raw_consume(client, url, MESSAGES)
                else:
                    result = await bridge_consume(client, endpoint, url, MESSAGES, store(run))
                await client.delete_queue(QueueUrl=url)
                rate = MESSAGES / result["seconds"]
                rates[name].append(rate)
                print(f"run {run + 1}/{RUNS} {name:14s} {rate:8.0f} msg/s", flush=True)
        for name, store in variants.items():
            url = await new_queue(client)
            if store is None:
                consumer = asyncio.create_task(
                    raw_consume(client, url, LATENCY_MESSAGES, latency=True)
                )
                await asyncio.sleep(0.2)  # polling before the first send
                await steady(client, url)
                result = await consumer
            else:
                result = await bridge_consume(
                    client, endpoint, url, LATENCY_MESSAGES, store(RUNS), steady(client, url)
                )
            await client.delete_queue(QueueUrl=url)
            latency[name] = percentiles(result["latencies"])
            print(f"latency {name:14s} {latency[name]}", flush=True)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return {
        "benchmark": "sqs consume on moto server mode: bridge (1 no-op handler, batched deletes, "
        "heartbeat) vs raw aiobotocore receive/delete loop, same receivers",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": sys.version.split()[0],
            "aiobotocore": aiobotocore.__version__,
            "moto": moto.__version__,
        },
        "parameters": {
            "messages": MESSAGES,
            "runs": RUNS,
            "receivers": RECEIVERS,
            "messages_per_receive": 10,
            "wait_time_seconds": 1,
            "body_bytes": len(body(0)),
            "latency_messages": LATENCY_MESSAGES,
            "latency_rate_per_s": LATENCY_RATE,
        },
        "throughput_msgs_per_s": {
            name: {"runs": [round(r) for r in values], "median": round(medians[name])}
            for name, values in rates.items()
        },
        "ratio_to_raw": {
            name: round(medians[name] / medians["raw"], 3) for name in rates if name != "raw"
        },
        "goal": {"ratio_to_raw": 0.8},
        "latency_send_to_processing": {
            "note": "raw: send to receive; bridge: send to the handler's run",
            **latency,
        },
    }


if __name__ == "__main__":
    # The handler is imported as ``bench.sqs:noop``: run that module's main, so that
    # the handler and the driver share one TRACKER (not ``__main__``'s copy).
    from bench import sqs as bench_sqs

    report = asyncio.run(bench_sqs.main())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["throughput_msgs_per_s"], indent=2))
    print("ratio to raw:", report["ratio_to_raw"])
