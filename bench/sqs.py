"""SQS (scenario 3): the bridge vs a raw aiobotocore receive/delete loop, on moto's server.

Both consume a freshly preloaded queue with ``RECEIVERS`` long-polling receivers, 10
messages per receive, and do the same work per message (``bench.payload.work``):

* ``raw``: each receiver loops ``ReceiveMessage`` -> the work per message ->
  ``DeleteMessageBatch``.
* ``bridge``: the in-process ``Runtime`` with the ``sqs`` connector (receivers,
  visibility heartbeat, batched deletes), ledger off; ``bridge_sqlite`` with the
  ledger on.

moto is the bottleneck (its cost per call grows with the queue's size), so every
run starts from the same small queue and the figures say more about moto than
about SQS. The rate runs from the first handler run until the last message is
deleted (raw: the last ``DeleteMessageBatch`` returned; bridge: the queue reads
empty, polled every 20 ms).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from bench.common import Env, Samples, goal
from bench.core import run_bridge
from bench.payload import Tally, body, bridge_config, reset, work

RECEIVERS = 4
SQS_CONNECTOR = """\
    type: sqs
    endpoint_url: {endpoint}
    consume:
      queue: {url}
      receivers: {receivers}
      wait_time_seconds: 1
      max_in_flight: 200
      event: {{type: subscriber/created}}"""


async def new_queue(client: Any, count: int) -> str:
    response = await client.create_queue(
        QueueName=f"bench-{uuid.uuid4().hex[:10]}", Attributes={"VisibilityTimeout": "30"}
    )
    url = str(response["QueueUrl"])
    for start in range(0, count, 10):
        entries = [
            {"Id": str(i), "MessageBody": body(start + i).decode()}
            for i in range(min(10, count - start))
        ]
        await client.send_message_batch(QueueUrl=url, Entries=entries)
    return url


async def empty(client: Any, url: str) -> None:
    while True:
        response = await client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attrs = response["Attributes"]
        if (
            attrs["ApproximateNumberOfMessages"]
            == "0"
            == attrs["ApproximateNumberOfMessagesNotVisible"]
        ):
            return
        await asyncio.sleep(0.02)


async def raw(client: Any, url: str, events: int) -> Tally:
    tally = reset(events * 4)
    deleted = 0

    async def receiver() -> None:
        nonlocal deleted
        while deleted < events:
            response = await client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = response.get("Messages") or []
            if not messages:
                continue
            for message in messages:
                await work(message["Body"].encode())
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ]
            result = await client.delete_message_batch(QueueUrl=url, Entries=entries)
            if result.get("Failed"):
                raise RuntimeError(f"delete failed: {result['Failed']}")
            deleted += len(messages)
            tally.last = time.perf_counter()
            tally.cpu_last = time.process_time()

    await asyncio.gather(*(receiver() for _ in range(RECEIVERS)))
    return tally


async def bridge(client: Any, endpoint: str, url: str, events: int, store: str) -> Tally:
    connector = SQS_CONNECTOR.format(endpoint=endpoint, url=url, receivers=RECEIVERS)
    return await run_bridge(
        bridge_config(connector, store=store), events * 4, until=lambda: empty(client, url)
    )


async def throughput(env: Env) -> dict[str, Any]:
    """Scenario 3: bridge vs raw aiobotocore on moto."""
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    events = env.size(150, 40)
    names = ["raw", "bridge"] if env.quick else ["raw", "bridge", "bridge_sqlite"]
    samples = Samples(names)  # the SQLite ledger is a reference variant, full runs only
    config = AioConfig(max_pool_connections=RECEIVERS * 2 + 4)
    endpoint = env.sqs_endpoint
    async with get_session().create_client("sqs", endpoint_url=endpoint, config=config) as client:
        for run in range(env.runs):
            for name in names:
                url = await new_queue(client, events)
                if name == "raw":
                    tally = await raw(client, url, events)
                else:
                    store = (
                        "memory://" if name == "bridge" else f"sqlite:///{env.workdir}/sqs-{run}.db"
                    )
                    tally = await bridge(client, endpoint, url, events, store)
                await client.delete_queue(QueueUrl=url)
                samples.add(name, tally)
            samples.progress("sqs", run)
    result = samples.result(
        "msg/s",
        [("bridge", "raw"), ("bridge_sqlite", "raw")],
        messages_per_run=events,
        receivers=RECEIVERS,
        broker="moto server mode (HTTP)",
    )
    result["goals"] = [
        goal(
            "sqs: bridge / raw aiobotocore", result["ratios"]["bridge/raw"], ">=", 0.8, "bridge/raw"
        )
    ]
    return result
