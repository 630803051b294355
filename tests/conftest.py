"""Shared fixtures. Broker fixtures live in tests/fixtures/<broker>.py; each starts what the
machine lacks (Tansu, moto) and fails loudly when a required broker is missing: a test
never passes by skipping its broker."""

from __future__ import annotations

import os

pytest_plugins = [
    "tests.parallel",
    "tests.fixtures.kafka",
    "tests.fixtures.rabbitmq",
    "tests.fixtures.redis",
    "tests.fixtures.nats",
    "tests.fixtures.sqs",
    "tests.fixtures.postgres",
]

# Small versions of chaos scenarios in `make test`; full size in `make chaos`.
CHAOS_FULL = os.environ.get("BRIDGE_CHAOS_FULL") == "1"
