"""/metrics, scraped and parsed, moves as events, retries, dead letters and bad input happen."""

from __future__ import annotations

import asyncio
import re
import textwrap
from typing import Any

import aiohttp
import orjson

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.runtime import Runtime
from connectors.memory import BROKER
from tests.support import free_port

ATTEMPTS: dict[str, int] = {}


async def second_time_lucky(event: Event[Any], ctx: Context) -> None:
    if ctx.attempt == 1:
        raise RuntimeError("transient")


async def hopeless(event: Event[Any], ctx: Context) -> None:
    raise RuntimeError("permanent")


CONFIG = """\
version: 1
store: memory://
server: {{listen: "127.0.0.1:{port}"}}
defaults: {{retry: {{attempts: 3, min_delay: 0, jitter: 0}}}}
connectors:
  in: {{type: memory, topic: {topic}, consume: {{event: {{type: job/run}}}}}}
handlers:
  - {{id: ok, on: job/run, type: log}}
  - {{id: lucky, on: job/run, type: python, function: "tests.unit.test_metrics:second_time_lucky"}}
  - {{id: doomed, on: job/run, type: python, function: "tests.unit.test_metrics:hopeless",
      cancel_on: [{{event: job/stop, match: event.data.job}}]}}
"""

_LINE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>[0-9.e+-]+|\+Inf)$")


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The Prometheus text format, parsed strictly: every sample line must match."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(
            tuple(p.split("=", 1)) for p in re.findall(r'[a-z_]+="[^"]*"', match["labels"] or "")
        )
        labels = frozenset((k, v.strip('"')) for k, v in labels)
        samples[(match["name"], labels)] = float(match["value"])
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


async def test_counters_move_with_what_happens() -> None:
    port = free_port()
    topic = "metrics-topic"
    cfg = load_config_text(textwrap.dedent(CONFIG.format(port=port, topic=topic)), {})
    runtime = Runtime(cfg)
    task = asyncio.create_task(runtime.run())
    try:
        while not runtime.ready:
            await asyncio.sleep(0.01)
        for n in range(5):
            BROKER.put(topic, orjson.dumps({"n": n}))
        BROKER.put(topic, b"{broken")
        while BROKER.topic(topic).acked < 6:
            await asyncio.sleep(0.01)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            samples = parse(await resp.text())
    finally:
        runtime.request_stop()
        await task
    assert value(samples, "bridge_events_received_total", connector="in") == 6
    assert (
        value(samples, "bridge_events_invalid_total", connector="in", reason="malformed_json") == 1
    )
    assert value(samples, "bridge_runs_total", handler="ok", outcome="succeeded") == 5
    assert value(samples, "bridge_runs_total", handler="lucky", outcome="succeeded") == 5
    assert value(samples, "bridge_runs_total", handler="doomed", outcome="dead_lettered") == 5
    assert value(samples, "bridge_retries_total", handler="lucky") == 5
    assert value(samples, "bridge_retries_total", handler="doomed") == 10
    assert value(samples, "bridge_dead_letters_total", handler="doomed") == 5
    # The broken message is invalid input, counted as such and not as a dead letter.
    assert value(samples, "bridge_dead_letters_total", handler="") == 0
    assert value(samples, "bridge_in_flight", connector="in") == 0
    assert value(samples, "bridge_run_duration_seconds_count", handler="ok") == 5
    assert value(samples, "bridge_fanout_width_count") == 5
    assert value(samples, "bridge_fanout_width_bucket", le="2.0") == 0
    assert value(samples, "bridge_fanout_width_bucket", le="4.0") == 5


async def scrape_idle(port: int, topic: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    cfg = load_config_text(textwrap.dedent(CONFIG.format(port=port, topic=topic)), {})
    runtime = Runtime(cfg)
    task = asyncio.create_task(runtime.run())
    try:
        while not runtime.ready:
            await asyncio.sleep(0.01)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
    finally:
        runtime.request_stop()
        await task
    return parse(text)


async def test_every_counter_is_exported_at_zero_before_anything_happens() -> None:
    samples = await scrape_idle(free_port(), "metrics-idle")
    names = {name for name, _ in samples}
    for handler in ("ok", "lucky", "doomed"):
        for outcome in ("succeeded", "dead_lettered"):
            assert (
                samples[
                    ("bridge_runs_total", frozenset({("handler", handler), ("outcome", outcome)}))
                ]
                == 0
            )
        for name in (
            "bridge_retries_total",
            "bridge_dead_letters_total",
            "bridge_runs_parked_total",
        ):
            assert samples[(name, frozenset({("handler", handler)}))] == 0
        assert (
            samples[("bridge_run_duration_seconds_count", frozenset({("handler", handler)}))] == 0
        )
    # What durable waits and cancel_on add, for the handlers that can have them only.
    suspended = {
        (dict(labels)["handler"], dict(labels)["kind"]): v
        for (name, labels), v in samples.items()
        if name == "bridge_runs_suspended_total"
    }
    assert suspended == {
        (h, kind): 0 for h in ("lucky", "doomed") for kind in ("sleeping", "waiting")
    }  # async python functions; not the log handler
    cancelled = {
        dict(labels)["handler"]: v
        for (name, labels), v in samples.items()
        if name == "bridge_runs_total" and ("outcome", "cancelled") in labels
    }
    assert cancelled == {"doomed": 0}
    for name in ("bridge_events_received_total", "bridge_internal_errors_total"):
        assert samples[(name, frozenset({("connector", "in")}))] == 0
    invalid = frozenset({("connector", "in"), ("reason", "malformed_json")})
    assert samples[("bridge_events_invalid_total", invalid)] == 0
    tombstones = frozenset({("connector", "in"), ("reason", "tombstone")})
    assert samples[("bridge_messages_skipped_total", tombstones)] == 0
    assert (
        samples[("bridge_store_errors_total", frozenset({("operation", "dead_letter_add")}))] == 0
    )
    # Process and Python runtime metrics, as prometheus_client names them.
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert {"python_gc_collections_total", "python_info"} <= names


async def test_events_the_api_refuses_are_counted_as_invalid() -> None:
    port = free_port()
    cfg = load_config_text(textwrap.dedent(CONFIG.format(port=port, topic="metrics-api")), {})
    runtime = Runtime(cfg)
    task = asyncio.create_task(runtime.run())
    url = f"http://127.0.0.1:{port}"
    try:
        while not runtime.ready:
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as session:
            batch = "application/cloudevents-batch+json"
            refused = [
                (b"{broken", "application/json"),
                (orjson.dumps([{"type": 5, "data": {}}]), batch),
                (orjson.dumps([{"type": "job/run", "id": "", "data": {}}]), batch),
            ]
            for body, content_type in refused:
                async with session.post(
                    f"{url}/v1/events", data=body, headers={"content-type": content_type}
                ) as resp:
                    assert 400 <= resp.status < 500, await resp.text()
            async with session.get(f"{url}/metrics") as resp:
                samples = parse(await resp.text())
    finally:
        runtime.request_stop()
        await task
    assert value(samples, "bridge_events_invalid_total", connector="api") == 3
    assert (
        value(samples, "bridge_events_invalid_total", connector="api", reason="malformed_json") == 1
    )
    api_invalid = value(
        samples, "bridge_events_invalid_total", connector="api", reason="invalid_cloudevent"
    )
    assert api_invalid == 2  # a type that is no string, an empty id
    assert value(samples, "bridge_dead_letters_total") == 0


WEBHOOK_CONFIG = """\
version: 1
store: memory://
server: {{listen: "127.0.0.1:{port}"}}
events: {{"job/run": {{schema: none}}}}
connectors:
  hook: {{type: webhook, provider: json, path: /hooks/jobs, event: {{type: job/run}}}}
handlers:
  - {{id: ok, on: job/run, type: log}}
"""


async def test_what_a_webhook_refuses_is_counted_as_invalid_input() -> None:
    """Webhook refusals are invalid input like a broker's, counted per connector from 0."""
    port = free_port()
    cfg = load_config_text(WEBHOOK_CONFIG.format(port=port), {})
    runtime = Runtime(cfg)
    task = asyncio.create_task(runtime.run())
    url = f"http://127.0.0.1:{port}"
    try:
        while not runtime.ready:
            await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/metrics") as resp:
                before = parse(await resp.text())
            for body in (b"{broken", b"\xff\xfe"):
                async with session.post(
                    f"{url}/hooks/jobs", data=body, headers={"content-type": "application/json"}
                ) as resp:
                    assert resp.status == 400, await resp.text()
            async with session.post(f"{url}/hooks/jobs", json={"n": 1}) as resp:
                assert resp.status == 202, await resp.text()
            async with session.get(f"{url}/metrics") as resp:
                after = parse(await resp.text())
    finally:
        runtime.request_stop()
        await task
    assert value(before, "bridge_events_invalid_total", connector="hook") == 0
    assert (
        "bridge_events_invalid_total",
        frozenset({("connector", "hook"), ("reason", "malformed_json")}),
    ) in before
    assert value(after, "bridge_events_invalid_total", connector="hook") == 2
    assert (
        value(after, "bridge_events_invalid_total", connector="hook", reason="malformed_json") == 1
    )
    assert value(after, "bridge_dead_letters_total") == 0
