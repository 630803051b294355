"""The ``bridge`` command on the real NATS JetStream server: bad messages dead-lettered
and acked while the rest flow (the consumer's pending count in /metrics), CloudEvents in binary and structured mode, a publish
round trip with ``Nats-Msg-Id`` and ``ce-`` headers, and ``bridge dev`` saying clearly
that no NATS server answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.nats import JetStreamAdmin
from tests.support import (
    BridgeProcess,
    dev_output_with,
    free_port,
    recorder,
    recording_bridge,
    runs_by_event,
    seen,
    until,
    write_config,
)

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def nats_connector(url: str, stream: str, subjects: list[str], **consume: Any) -> dict[str, Any]:
    return {
        "type": "nats",
        "servers": [url],
        "reconnect_wait": "200ms",
        "consume": {
            "stream": stream,
            "durable": "bridge",
            "subjects": subjects,
            "declare": {},
            "health_interval": "200ms",
            "event": {"type": "test/item"},
            **consume,
        },
    }


async def _acked(jetstream: JetStreamAdmin, stream: str) -> bool:
    return await jetstream.pending(stream, "bridge") == (0, 0)


async def _letters(proc: BridgeProcess, count: int) -> bool:
    return len(await proc.dead_letters()) >= count


async def test_bad_messages_are_dead_lettered_and_acked_while_the_rest_flow(
    jetstream: JetStreamAdmin, tmp_path: Path
) -> None:
    stream, subject = await jetstream.stream()
    connector = nats_connector(jetstream.url, stream, [subject], max_body_bytes=2_000)
    config = write_config(
        tmp_path, connectors={"nats": connector}, handlers=[recorder("a"), recorder("b")]
    )
    proc, record = recording_bridge(config, tmp_path)
    proc.start()
    try:
        await proc.wait_ready()
        bad = {
            "malformed_json": b"{not json",
            "invalid_utf8": b'{"seq": "\xff\xfe"}',
            "too_large": json.dumps({"pad": "x" * 5_000}).encode(),
        }
        for n in range(20):
            await jetstream.publish(subject, json.dumps({"seq": n}).encode())
        for body in bad.values():
            await jetstream.publish(subject, body)
        for n in range(20, 40):  # after the bad ones: they must not hold these back
            await jetstream.publish(subject, json.dumps({"seq": n}).encode())
        # A CloudEvent in binary mode (ce- headers) and one in structured mode.
        await jetstream.publish(
            subject,
            json.dumps({"seq": "ce-binary"}).encode(),
            {
                "ce-specversion": "1.0",
                "ce-id": "b-1",
                "ce-type": "test/item",
                "ce-source": "t",
                "content-type": "application/json",
            },
        )
        structured = {
            "specversion": "1.0",
            "id": "s-1",
            "type": "test/item",
            "source": "t",
            "datacontenttype": "application/json",
            "data": {"seq": "ce-structured"},
        }
        await jetstream.publish(
            subject,
            json.dumps(structured).encode(),
            {"content-type": "application/cloudevents+json"},
        )
        everything = {str(n) for n in range(40)} | {"ce-binary", "ce-structured"}
        await until(
            lambda: seen(record, "a") == everything and seen(record, "b") == everything,
            30,
            "every good message through both handlers",
            watch=[proc],
        )
        await until(lambda: _letters(proc, 3), 30, "three dead letters", watch=[proc])
        await until(lambda: _acked(jetstream, stream), 30, "every message acked", watch=[proc])
        # The consumer's pending count, what the KEDA nats-jetstream trigger reads.
        lag = f'bridge_source_lag{{connector="nats",part="{stream}/bridge"}} 0'

        async def lag_shown() -> bool:
            return await proc.metrics_have(lag)

        await until(lag_shown, 10, "the consumer's pending of 0 in /metrics", watch=[proc])
        stored = await proc.dead_letters()
        assert proc.terminate() == 0
    finally:
        proc.kill()
    reasons = sorted(letter["reason"].split(":")[0].split(" ")[0] for letter in stored)
    assert reasons == sorted(bad), [letter["reason"] for letter in stored]
    runs = runs_by_event(record)
    assert runs[("a", "b-1")] == 1 and runs[("a", "s-1")] == 1  # CloudEvent ids kept
    assert await jetstream.pending(stream, "bridge") == (0, 0)


async def test_publish_round_trip_sets_nats_msg_id_and_ce_headers(
    jetstream: JetStreamAdmin, tmp_path: Path
) -> None:
    total = 50
    stream, subject = await jetstream.stream()
    out_stream, out_subject = await jetstream.stream()
    handlers = [
        {
            "id": "forward",
            "on": "test/item",
            "type": "publish",
            "connector": "nats",
            "destination": out_subject,
        }
    ]
    config = write_config(
        tmp_path,
        connectors={"nats": nats_connector(jetstream.url, stream, [subject])},
        handlers=handlers,
    )
    proc = BridgeProcess(config, tmp_path)
    proc.start()
    try:
        await proc.wait_ready()
        for n in range(total):
            await jetstream.publish(subject, json.dumps({"seq": n}).encode(), {"x-n": str(n)})
        await until(lambda: _acked(jetstream, stream), 30, "every message forwarded", watch=[proc])
        assert proc.terminate() == 0
    finally:
        proc.kill()
    info = await jetstream.js.stream_info(out_stream)
    assert info.state.messages == total
    sub = await jetstream.js.pull_subscribe(out_subject, durable="check", stream=out_stream)
    got = await sub.fetch(total, timeout=5)
    ids = set()
    for msg in got:
        headers = msg.headers or {}
        assert headers["ce-type"] == "test/item"
        assert headers["Nats-Msg-Id"] == headers["ce-id"]  # JetStream's dedupe key = event id
        ids.add(headers["ce-id"])
        await msg.ack()
    assert ids == {f"{stream}-{n + 1}" for n in range(total)}  # ids from stream + sequence


async def test_bridge_dev_says_clearly_when_no_nats_server_answers(tmp_path: Path) -> None:
    port, nats_port = free_port(), free_port()
    connector = {
        "type": "nats",
        "servers": [f"nats://127.0.0.1:{nats_port}"],
        "consume": {"stream": "S", "durable": "d", "event": {"type": "test/item"}},
    }
    config = write_config(
        tmp_path,
        connectors={"nats": connector},
        handlers=[{"id": "h", "on": "test/item", "type": "log"}],
        store="memory://",
        server={"listen": f"127.0.0.1:{port}"},
    )
    text = await dev_output_with(config, "no NATS server answers")
    assert f"nats://127.0.0.1:{nats_port}" in text
    assert "bridge dev does not start NATS" in text
    assert "Traceback" not in text
