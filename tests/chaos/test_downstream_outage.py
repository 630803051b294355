"""Chaos 9: the application behind an ``http`` handler is down for 60 s (10 s in ``make test``).

A real aiohttp application (started by the test on a local port) receives the
``http`` handler's CloudEvents; a ``python`` handler on the same events records
them too. Events arrive over the event API at a steady rate throughout. The test
takes the application down (its server is closed: connections refused), keeps
sending, and brings it back on the same port.

Dead-letter variant (the retry budget, ``ATTEMPTS`` attempts with exponential
backoff, is shorter than the outage): proves every run retries exactly its
attempts and no longer than its budget, then is dead-lettered; every event
reaches the application or is dead-lettered for it (0 lost); no event that
arrived after the application came back is dead-lettered; the other branch runs
for every event regardless; the bridge's memory (RSS, sampled with psutil)
stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil
import pytest
import yaml
from aiohttp import web

from tests.chaos.report import ChaosReport
from tests.conftest import CHAOS_FULL
from tests.support import BridgeProcess, free_port, post_events, read_lines, until

RATE = 50  # events per second
WARM = 10.0 if CHAOS_FULL else 3.0
OUTAGE = 60.0 if CHAOS_FULL else 10.0
AFTER = 10.0 if CHAOS_FULL else 3.0
ATTEMPTS = 6 if CHAOS_FULL else 5
MIN_DELAY = 1.0 if CHAOS_FULL else 0.25
MAX_DELAY = 16.0 if CHAOS_FULL else 2.0
TIMEOUT = 2.0
MAX_IN_FLIGHT = 1000
RSS_GROWTH_LIMIT = 100 * 2**20  # bytes over the warm-up peak


def budget() -> float:
    """Longest a run may take from its first attempt's start to its last one's (no jitter)."""
    delays = [min(MIN_DELAY * 2**n, MAX_DELAY) for n in range(ATTEMPTS - 1)]
    return float(sum(delays) + (ATTEMPTS - 1) * TIMEOUT)


class Application:
    """The downstream application: counts each event id it is sent; can go down and up."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: Counter[str] = Counter()
        self.first_after_up: float | None = None
        self.up_at = 0.0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.received[request.headers["ce-id"]] += 1
        if self.first_after_up is None and self.up_at:
            self.first_after_up = time.monotonic()
        return web.json_response({"ok": True})

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/events", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._runner = runner

    async def down(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def config(tmp_path: Path, port: int) -> Path:
    cfg: dict[str, Any] = {
        "version": 1,
        "store": f"sqlite:///{tmp_path}/state.db",
        "drain_timeout": "5s",
        "telemetry": {"logs": {"format": "json", "level": "ERROR"}},
        "server": {"api": {"max_in_flight": MAX_IN_FLIGHT}},
        "events": {"order/*": {"schema": "none"}},
        "handlers": [
            {
                "id": "app",
                "on": "order/*",
                "type": "http",
                "url": f"http://127.0.0.1:{port}/events",
                "retry": {
                    "attempts": ATTEMPTS,
                    "backoff": "exponential",
                    "min_delay": f"{MIN_DELAY}s",
                    "max_delay": f"{MAX_DELAY}s",
                },
                "timeout": f"{TIMEOUT}s",
            },
            {
                "id": "audit",
                "on": "order/*",
                "type": "python",
                "function": "tests.apps.recorder:record",
            },
        ],
    }
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Load:
    """Posts ``RATE`` events a second over the event API; remembers when each was accepted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: dict[str, float] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            while not self.stop.is_set():
                due = int((time.monotonic() - started) * RATE)
                ids = [f"o{k:06d}" for k in range(n, due)]
                if ids:
                    events = [
                        {
                            "specversion": "1.0",
                            "id": i,
                            "source": "chaos",
                            "type": "order/placed",
                            "data": {"key": i},
                        }
                        for i in ids
                    ]
                    status, body = await post_events(session, self.url, events)
                    assert status == 202, body
                    now = time.monotonic()
                    self.accepted.update((i, now) for i in ids)
                    n = due
                await asyncio.sleep(0.1)


def dead_letters(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT record FROM dead_letters").fetchall()
    return [orjson.loads(r[0]) for r in rows]


def pending(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL").fetchone()[0])


@pytest.mark.chaos
@pytest.mark.timeout(600 if CHAOS_FULL else 150)
async def test_downstream_outage_dead_letters_within_budget_and_loses_nothing(
    tmp_path: Path,
) -> None:
    report = ChaosReport("downstream_outage_dead_letter")
    app = Application(free_port())
    db = tmp_path / "state.db"
    record = tmp_path / "record.txt"
    proc = BridgeProcess(
        config(tmp_path, app.port), tmp_path, env={"BRIDGE_TEST_RECORD": str(record)}
    )
    load = Load(proc.url)
    rss: list[tuple[float, int]] = []
    sampling = asyncio.Event()

    async def sample() -> None:
        if proc.proc is None:
            raise RuntimeError("bridge not started")
        process = psutil.Process(proc.proc.pid)
        while not sampling.is_set():
            rss.append((time.monotonic(), process.memory_info().rss))
            await asyncio.sleep(0.5)

    await app.up()
    proc.start()
    poster = sampler = None
    try:
        await proc.wait_ready()
        poster = asyncio.create_task(load.run())
        sampler = asyncio.create_task(sample())
        await asyncio.sleep(WARM)
        down_at = time.monotonic()
        await app.down()
        report.faults.append(f"application down for {OUTAGE:g}s")
        await asyncio.sleep(OUTAGE)
        await app.up()
        app.up_at = up_at = time.monotonic()
        await asyncio.sleep(AFTER)
        load.stop.set()
        await poster
        accepted = load.accepted

        def settled() -> bool:
            dead = {d["event_id"] for d in dead_letters(db) if d["handler"] == "app"}
            return set(accepted) <= set(app.received) | dead and pending(db) == 0

        await until(settled, 120 + budget(), "every event delivered or dead-lettered")
        drained = time.monotonic() - up_at
        sampling.set()
        await sampler
        assert await proc.stop() == 0, proc.log_tail()
    finally:
        load.stop.set()
        sampling.set()
        for task in (poster, sampler):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        proc.kill()
        await app.down()

    letters = dead_letters(db)
    dead = {d["event_id"]: d for d in letters if d["handler"] == "app"}
    audit = {line.split(" ")[2] for line in read_lines(record)}
    every = set(accepted)
    lost = every - set(app.received) - set(dead)
    spans = [
        d["attempts"][-1]["started_at"] - d["attempts"][0]["started_at"] for d in dead.values()
    ]
    wrong_attempts = [e for e, d in dead.items() if len(d["attempts"]) != ATTEMPTS]
    not_downstream = [e for e, d in dead.items() if "HttpUnreachable" not in d["reason"]]
    late_dead = [e for e in dead if accepted[e] > up_at + 0.5]
    over_delivered = [e for e, n in app.received.items() if n > ATTEMPTS]
    warm = [b for t, b in rss if t < down_at] or [0]
    baseline = max(warm)
    peak = max(b for _, b in rss)

    report.sent = len(every)
    report.delivered = len(every & set(app.received))
    report.lost = len(lost)
    report.duplicates = sum(n - 1 for n in app.received.values() if n > 1)
    report.dead_lettered = len(dead)
    report.recovery_seconds = [
        round((app.first_after_up or up_at) - up_at, 2),
        round(drained, 2),
    ]
    report.extra = {
        "variant": "dead_letter",
        "rate_per_second": RATE,
        "outage_seconds": OUTAGE,
        "retry": {
            "attempts": ATTEMPTS,
            "min_delay": MIN_DELAY,
            "max_delay": MAX_DELAY,
            "timeout": TIMEOUT,
        },
        "budget_seconds": round(budget(), 2),
        "longest_dead_run_seconds": round(max(spans, default=0.0), 2),
        "dead_letters_other_handlers": len(letters) - len(dead),
        "audit_ran": len(audit & every),
        "accepted_during_outage": sum(1 for t in accepted.values() if down_at <= t <= up_at),
        "dead_accepted_after_up": len(late_dead),
        "rss_mb": {
            "warm_peak": round(baseline / 2**20, 1),
            "peak": round(peak / 2**20, 1),
            "end": round(rss[-1][1] / 2**20, 1),
            "samples": len(rss),
        },
    }
    report.write()

    assert lost == set()
    assert audit >= every
    assert len(letters) == len(dead)  # only the app branch dead-letters
    assert dead, "the outage should outlast the retry budget"
    assert len(every & set(app.received)) > len(every) // 2
    assert wrong_attempts == []
    assert not_downstream == []
    assert max(spans) <= budget() + 2.0
    assert late_dead == []
    assert over_delivered == []
    assert peak - baseline <= RSS_GROWTH_LIMIT
