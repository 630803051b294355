"""The Kafka source and publisher pass the conformance suite against a real broker (Tansu)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from connectors.kafka import KafkaConfig, KafkaPublisher
from connectors.kafka.consume import KafkaSource
from tests.contract import PublisherContract, SourceContract
from tests.fixtures.kafka import KafkaAdmin

pytestmark = pytest.mark.integration


def kafka_config(bootstrap: str, topic: str | None = None, **consume: Any) -> KafkaConfig:
    """A connector config consuming ``topic`` from the start (publish-only without one).

    Short session timeouts: Tansu holds a group join for half of it.
    """
    data: dict[str, Any] = {"type": "kafka", "bootstrap_servers": bootstrap}
    if topic is not None:
        data["consume"] = {
            "topics": [topic],
            "group_id": f"group-{topic}",
            "start_from": "earliest",
            "session_timeout": "2s",
            "heartbeat_interval": "500ms",
            "commit_interval": "200ms",
            "fetch_max_wait": "100ms",
            **consume,
        }
    return KafkaConfig.model_validate(data)


class KafkaHarness:
    """One-partition topics (the contract expects a queue's order); the contract takes many
    messages before settling any, so ordering is off here (tested on its own elsewhere)."""

    def __init__(self, admin: KafkaAdmin) -> None:
        self.admin = admin

    async def new_destination(self) -> str:
        return await self.admin.new_topic(partitions=1)

    def source(self, destination: str) -> KafkaSource:
        return KafkaSource(kafka_config(self.admin.bootstrap, destination, ordering="none"), "k")

    def publisher(self) -> KafkaPublisher:
        return KafkaPublisher(kafka_config(self.admin.bootstrap), "k")

    async def produce(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None = None
    ) -> None:
        await self.admin.produce(destination, [(key, body, headers)])


@pytest.fixture
def harness(kafka: KafkaAdmin) -> KafkaHarness:
    return KafkaHarness(kafka)


class TestKafkaSource(SourceContract):
    settle_grace = 0.2


class TestKafkaPublisher(PublisherContract):
    pass
