"""The memory connector passes the Source and Publisher conformance suite."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest

from connectors.memory import MemoryBroker, MemoryConfig, MemoryPublisher, MemorySource
from tests.contract import PublisherContract, SourceContract

_names = itertools.count()


class MemoryHarness:
    def __init__(self) -> None:
        self.broker = MemoryBroker()

    async def new_destination(self) -> str:
        return f"topic-{next(_names)}"

    def source(self, destination: str) -> MemorySource:
        return MemorySource(MemoryConfig(topic=destination), "mem", self.broker)

    def publisher(self) -> MemoryPublisher:
        return MemoryPublisher(MemoryConfig(), "mem", self.broker)

    async def produce(
        self, destination: str, body: bytes, headers: Mapping[str, str], key: str | None = None
    ) -> None:
        self.broker.put(destination, body, headers, key)


@pytest.fixture
def harness() -> MemoryHarness:
    return MemoryHarness()


class TestMemorySource(SourceContract):
    settle_grace = 0.05


class TestMemoryPublisher(PublisherContract):
    pass
