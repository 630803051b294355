"""The RabbitMQ source and publisher pass the conformance suite against the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from connectors.rabbitmq import RabbitMQConfig
from connectors.rabbitmq.consume import RabbitMQSource
from connectors.rabbitmq.publish import RabbitMQPublisher
from tests.contract import PublisherContract, SourceContract
from tests.fixtures.rabbitmq import RabbitAdmin

pytestmark = pytest.mark.integration


def rabbit_config(url: str, queue: str | None = None, **consume: Any) -> RabbitMQConfig:
    """A connector config consuming ``queue`` (publish-only without one)."""
    data: dict[str, Any] = {"type": "rabbitmq", "url": url, "reconnect_interval": 0.5}
    if queue is not None:
        data["consume"] = {"queue": queue, "max_in_flight": 100, "health_interval": 1, **consume}
    return RabbitMQConfig.model_validate(data)


class RabbitHarness:
    """Queues on the real broker; messages produced with aio-pika, each with a message_id
    (as the bridge's publisher always sets one)."""

    def __init__(self, admin: RabbitAdmin) -> None:
        self.admin = admin

    async def new_destination(self) -> str:
        return await self.admin.queue()

    def source(self, destination: str) -> RabbitMQSource:
        return RabbitMQSource(rabbit_config(self.admin.url, destination), "rabbit")

    def publisher(self) -> RabbitMQPublisher:
        return RabbitMQPublisher(rabbit_config(self.admin.url), "rabbit")

    async def produce(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None = None
    ) -> None:
        await self.admin.publish(
            destination, body, headers=dict(headers), message_id=uuid.uuid4().hex
        )


@pytest.fixture
def harness(rabbit: RabbitAdmin) -> RabbitHarness:
    return RabbitHarness(rabbit)


class TestRabbitMQSource(SourceContract):
    settle_grace = 0.3


class TestRabbitMQPublisher(PublisherContract):
    pass
