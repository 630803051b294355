"""Two ``bridge run`` replicas on one PostgreSQL schema, one Kafka consumer group on a
4-partition topic (the ``replicas`` scenario of ``make bench``, small): every message
runs its 4 handlers exactly once across the two processes, both replicas work, and the
shared ledger is written in batches (store round trips per event, from both replicas'
``/metrics``, far under the 2 or more an unbatched read and write per event costs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.replicas import WIDTH, run_replicas
from tests.fixtures.kafka import KafkaAdmin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

EVENTS = 800


async def test_two_replicas_one_postgres_lose_and_repeat_nothing(
    kafka: KafkaAdmin, postgres: str, tmp_path: Path
) -> None:
    topic = await kafka.new_topic(partitions=4)
    outcome = await run_replicas(kafka.bootstrap, topic, EVENTS, tmp_path)
    assert outcome["lost"] == 0, outcome
    assert outcome["duplicated"] == 0, outcome
    assert outcome["unexpected"] == 0, outcome
    assert sum(outcome["runs_per_replica"]) == EVENTS * WIDTH
    assert min(outcome["runs_per_replica"]) > 0, "one replica did no work"
    assert outcome["round_trips_per_event"] <= 0.5, outcome
