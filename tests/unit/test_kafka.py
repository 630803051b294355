"""The Kafka connector without a broker: the intake's bookkeeping and the config."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from bridge.app import load_config_text
from bridge.errors import ConfigError
from bridge.transport import Settlement
from connectors.kafka import KafkaConfig, client_options
from connectors.kafka.intake import Intake, PartitionState
from tests.support import ROOT


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


class Flow:
    """Records the intake's pause/resume calls."""

    def __init__(self) -> None:
        self.paused: set[TP] = set()

    def pause(self, tps: list[Any]) -> None:
        self.paused |= set(tps)

    def resume(self, tps: list[Any]) -> None:
        self.paused -= set(tps)


def intake(
    ordering: Literal["key", "partition", "none"] = "none",
    max_in_flight: int = 100,
    max_uncommitted: int = 1000,
    partitions: Iterable[int] = (0,),
) -> tuple[Intake, Flow]:
    flow = Flow()
    made = Intake(
        ordering=ordering,
        max_in_flight=max_in_flight,
        max_uncommitted=max_uncommitted,
        pause=flow.pause,
        resume=flow.resume,
    )
    made.assign([TP("t", p) for p in partitions])
    return made, flow


def feed(into: Intake, partition: int, offsets: Iterable[int], key: bytes | None = None) -> None:
    records = [Record("t", partition, o, key) for o in offsets]
    into.accept({TP("t", partition): records}, lambda tp: None)


def take_all(source: Intake) -> list[tuple[PartitionState, Any]]:
    out = []
    while (item := source.take()) is not None:
        out.append(item)
    return out


# --------------------------------------------------------------------------- commit prefix


def test_only_the_contiguous_finished_prefix_is_committable() -> None:
    state = PartitionState(TP("t", 0))
    for offset in (0, 1, 2, 5, 6):  # a gap (compaction) at 3-4
        state.track(offset)
    assert state.commit_point() == 0
    state.finish(1)
    state.finish(5)
    assert state.commit_point() == 0  # 0 is not finished
    state.finish(0)
    assert state.commit_point() == 2
    state.finish(2)
    assert state.commit_point() == 6  # past the gap, up to the unfinished 6
    state.finish(6)
    assert state.commit_point() == 7
    assert not state.finished


def test_commit_offsets_only_for_owned_partitions_that_moved() -> None:
    source, _ = intake(partitions=(0, 1))
    feed(source, 0, range(3))
    feed(source, 1, range(3))
    for state, record in take_all(source):
        if record.partition == 0:
            source.settle(state, record, Settlement.ACK)
    offsets = source.commit_offsets()
    assert {s.tp.partition: o for s, o in offsets.items()} == {0: 3, 1: 0}
    for state, offset in offsets.items():
        state.committed = offset
    assert source.commit_offsets() == {}
    one = source.partitions[TP("t", 1)]
    source.drain([one])
    source.release([one])
    assert source.commit_offsets([one]) == {}


def test_a_released_partition_ignores_late_settles() -> None:
    source, _ = intake()
    feed(source, 0, range(2))
    (state, first), (_, second) = take_all(source)
    source.drain([state])
    source.settle(state, first, Settlement.ACK)  # still owned while draining: counts
    assert state.commit_point() == 1
    source.release([state])
    source.settle(state, second, Settlement.ACK)
    assert state.commit_point() == 1
    assert source.in_flight == 0


# --------------------------------------------------------------------------- ordering


def test_ordering_key_holds_one_message_per_key() -> None:
    source, _ = intake(ordering="key")
    feed(source, 0, [0], b"a")
    feed(source, 0, [1], b"a")
    feed(source, 0, [2], b"b")
    feed(source, 0, [3], b"a")
    feed(source, 0, [4], None)
    feed(source, 0, [5], None)
    out = take_all(source)
    assert [r.offset for _, r in out] == [0, 2, 4, 5]  # a@1 and a@3 wait for a@0
    state, a0 = out[0]
    source.settle(state, a0, Settlement.ACK)
    assert [r.offset for _, r in take_all(source)] == [1]
    assert source.buffered == 1  # a@3


def test_ordering_partition_holds_one_message_per_partition() -> None:
    source, _ = intake(ordering="partition", partitions=(0, 1))
    feed(source, 0, range(3))
    feed(source, 1, range(3))
    out = take_all(source)
    assert [(r.partition, r.offset) for _, r in out] == [(0, 0), (1, 0)]
    state, record = out[1]
    source.settle(state, record, Settlement.ACK)
    assert [(r.partition, r.offset) for _, r in take_all(source)] == [(1, 1)]


def test_retry_later_keeps_the_lane_and_the_commit_point() -> None:
    source, _ = intake(ordering="key")
    feed(source, 0, range(2), b"k")
    ((state, first),) = take_all(source)
    assert source.settle(state, first, Settlement.RETRY_LATER) is True
    assert take_all(source) == []  # not before requeue, and k@1 still waits
    source.requeue(state, first)
    assert [r.offset for _, r in take_all(source)] == [0]
    assert state.commit_point() == 0


def test_retry_later_during_shutdown_is_left_to_redelivery() -> None:
    source, _ = intake()
    feed(source, 0, range(1))
    ((state, record),) = take_all(source)
    source.closing = True
    assert source.settle(state, record, Settlement.RETRY_LATER) is False
    assert state.commit_point() == 0


# --------------------------------------------------------------------------- backpressure


def test_all_partitions_pause_at_max_in_flight_and_resume_at_half() -> None:
    source, flow = intake(max_in_flight=4, partitions=(0, 1))
    feed(source, 0, range(3))
    assert flow.paused == set()
    feed(source, 1, range(2))
    assert flow.paused == {TP("t", 0), TP("t", 1)}
    out = take_all(source)
    assert len(out) == 4  # never more than max_in_flight out
    for state, record in out[:2]:
        source.settle(state, record, Settlement.ACK)
    assert flow.paused  # 3 left (1 buffered + 2 out) > 2
    state, record = out[2]
    source.settle(state, record, Settlement.ACK)
    assert flow.paused == set()


def test_late_settles_of_a_released_partition_still_lift_the_pause() -> None:
    source, flow = intake(max_in_flight=4, partitions=(0, 1))
    feed(source, 0, range(4))
    out = take_all(source)
    assert source.paused_all
    zero = source.partitions[TP("t", 0)]
    source.drain([zero])
    source.release([zero])
    assert source.paused_all  # its four runs are still going
    for state, record in out:
        source.settle(state, record, Settlement.ACK)
    assert not source.paused_all
    assert TP("t", 1) not in flow.paused


def test_one_partition_pauses_when_its_uncommitted_window_is_full() -> None:
    source, flow = intake(max_uncommitted=4, partitions=(0, 1))
    feed(source, 0, range(4))
    assert flow.paused == {TP("t", 0)}
    out = take_all(source)
    for state, record in out[1:]:  # offset 0 stays out: nothing is committable
        source.settle(state, record, Settlement.ACK)
    assert flow.paused == {TP("t", 0)}
    state, record = out[0]
    source.settle(state, record, Settlement.ACK)
    assert flow.paused == set()


def test_revoking_drops_what_was_buffered() -> None:
    source, _ = intake(ordering="partition", partitions=(0, 1))
    feed(source, 0, range(5))
    feed(source, 1, range(5))
    source.drain([source.partitions[TP("t", 0)]])
    assert source.buffered == 5
    assert [r.partition for _, r in take_all(source)] == [1]


def test_a_new_assignment_releases_lost_partitions() -> None:
    source, flow = intake(max_in_flight=2, partitions=(0,))
    feed(source, 0, range(2))
    old = source.partitions[TP("t", 0)]
    assert flow.paused == {TP("t", 0)}
    source.assign([TP("t", 1)])
    assert old.released
    assert source.buffered == 0
    assert list(source.partitions) == [TP("t", 1)]
    assert TP("t", 1) not in flow.paused  # the load went with the lost partition
    assert not source.paused_all


# --------------------------------------------------------------------------- config


def test_config_defaults_and_bootstrap_list() -> None:
    cfg = KafkaConfig.model_validate(
        {
            "type": "kafka",
            "bootstrap_servers": "a:9092, b:9092",
            "consume": {"topics": ["t"], "group_id": "g"},
        }
    )
    assert cfg.bootstrap_servers == ["a:9092", "b:9092"]
    assert cfg.consume is not None
    assert (cfg.consume.ordering, cfg.consume.start_from) == ("key", "latest")
    assert client_options(cfg) == {
        "bootstrap_servers": ["a:9092", "b:9092"],
        "client_id": "bridge",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_scram_over_tls_options_and_secret_not_shown() -> None:
    cfg = KafkaConfig.model_validate(
        {
            "type": "kafka",
            "bootstrap_servers": "b:9093",
            "tls": {},
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "pw-123"},
        }
    )
    options = client_options(cfg)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("u", "pw-123")
    assert options["ssl_context"].check_hostname
    assert "pw-123" not in repr(cfg)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"sasl": {"mechanism": "PLAIN", "username": "u"}}, "needs username and password"),
        ({"sasl": {"mechanism": "OAUTHBEARER"}}, "exactly one of token_provider or token_file"),
        ({"tls": {"cert_file": "c.pem"}}, "cert_file and key_file go together"),
        ({"consume": {"topics": [], "group_id": "g"}}, "at least 1 item"),
    ],
)
def test_invalid_security_and_consume_settings(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaConfig.model_validate({"type": "kafka", "bootstrap_servers": "b:1", **section})


async def test_oauthbearer_token_file_is_read_at_every_authentication(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    cfg = KafkaConfig.model_validate(
        {
            "type": "kafka",
            "bootstrap_servers": "b:1",
            "sasl": {"mechanism": "OAUTHBEARER", "token_file": str(token)},
        }
    )
    provider = client_options(cfg)["sasl_oauth_token_provider"]
    assert await provider.token() == "first"
    token.write_text("rotated")
    assert await provider.token() == "rotated"


async def async_token() -> str:
    return "from-a-function"


async def test_oauthbearer_token_provider_function() -> None:
    cfg = KafkaConfig.model_validate(
        {
            "type": "kafka",
            "bootstrap_servers": "b:1",
            "sasl": {
                "mechanism": "OAUTHBEARER",
                "token_provider": "tests.unit.test_kafka:async_token",
            },
        }
    )
    options = client_options(cfg)
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert await options["sasl_oauth_token_provider"].token() == "from-a-function"


def test_bridge_config_takes_the_password_from_the_environment() -> None:
    text = """
version: 1
connectors:
  signups:
    type: kafka
    bootstrap_servers: ${KAFKA_BOOTSTRAP}
    sasl: {mechanism: SCRAM-SHA-256, username: bridge, password: "${KAFKA_PASSWORD}"}
    consume:
      topics: [signups]
      group_id: newsletter
      ordering: partition
      event: {type: subscriber/created}
"""
    env = {"KAFKA_BOOTSTRAP": "k1:9092,k2:9092", "KAFKA_PASSWORD": "from-env"}
    cfg = load_config_text(text, env, check=False)
    conn = cfg.connectors["signups"]
    assert isinstance(conn, KafkaConfig)
    assert conn.sasl is not None
    assert conn.sasl.password is not None
    assert conn.sasl.password.get_secret_value() == "from-env"
    with pytest.raises(ConfigError, match=r"connectors\.signups\.consume\.partitions: unknown key"):
        load_config_text(
            text.replace("ordering: partition", "ordering: partition\n      partitions: 3"),
            env,
            check=False,
        )


def test_the_config_module_does_not_import_aiokafka() -> None:
    code = "import sys, connectors, bridge.app; bridge.app.json_schema(); print('aiokafka' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"
