"""Soak (issue 18, memory): RSS of the bridge with the UI and its run history on.

The bridge runs as ``python -m bridge run`` (its own process: the RSS is the
bridge's) with the SQLite store, ``server.ui.enabled`` (so the run history is on)
and 3 python no-op handlers. Four clients post 50-event batches to
``/v1/events`` as fast as the bridge takes them, holding at most ``BACKLOG``
events posted but not yet handled (the inbox is on disk; an unbounded backlog
would measure the disk, not the bridge).

* idle: RSS once the bridge is ready, before any event.
* load: RSS sampled every second for ``BENCH_SOAK_SECONDS`` (600 in ``make
  bench``, 8 with ``--quick``); peak, the least-squares slope over the last
  half (MB/s) and events handled per second.
* after: RSS 10 s after the load ends (what a bridge keeps once it is quiet).

``BENCH_SOAK_UI=0`` runs the same with the UI (and history) off, for comparison.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from bench.common import Env, goal
from bench.memory import rss_mb, slope
from tests.support import BridgeProcess

BATCH = 50
CLIENTS = 4
BACKLOG = 5_000
HANDLERS = 3
LIMIT_MB = 128.0  # deploy/: the sidecar overlay's memory limit (128Mi)
CONFIG = """\
version: 1
store: sqlite:///{db}
server: {{ui: {{enabled: {ui}}}}}
telemetry: {{logs: {{level: ERROR}}}}
events:
  subscriber/created: {{schema: "bench.payload:SubscriberCreated"}}
handlers:
{handlers}"""


def batch(start: int) -> bytes:
    """50 structured CloudEvents, ids ``start`` .. ``start + 49``."""
    return orjson.dumps(
        [
            {
                "specversion": "1.0",
                "id": f"soak-{n}",
                "source": "bench/soak",
                "type": "subscriber/created",
                "data": {
                    "email": f"user{n}@example.com",
                    "name": f"User {n}",
                    "preferences": ["python", "rust"],
                },
            }
            for n in range(start, start + BATCH)
        ]
    )


def parts_mb(process: psutil.Process) -> tuple[float, float, float]:
    """(shared, data, anonymous) MB of the process: the file mappings in its RSS (SQLite's
    WAL index), its data segment (the heap, touched or not) and RSS less the shared part."""
    info = process.memory_info()
    shared = float(getattr(info, "shared", 0)) / 2**20
    data = float(getattr(info, "data", 0)) / 2**20
    return shared, data, float(info.rss) / 2**20 - shared


class Load:
    """Posting clients that keep at most ``BACKLOG`` events ahead of the handlers."""

    def __init__(self, url: str) -> None:
        self.url = url + "/v1/events"
        self.posted = 0
        self.handled = 0.0
        self.errors = 0
        self.stop = asyncio.Event()

    async def client(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            if self.posted - self.handled > BACKLOG:
                await asyncio.sleep(0.02)
                continue
            start, self.posted = self.posted, self.posted + BATCH
            async with session.post(
                self.url, data=batch(start), headers={"content-type": "application/json"}
            ) as resp:
                await resp.read()
                if resp.status != 202:
                    self.errors += 1

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self.client(session) for _ in range(CLIENTS)))


async def soak(env: Env) -> dict[str, Any]:
    """Idle RSS, then RSS every second under sustained load with the UI and history on."""
    seconds = float(os.environ.get("BENCH_SOAK_SECONDS") or env.seconds(600.0, 8.0))
    ui = os.environ.get("BENCH_SOAK_UI", "1") != "0"
    workdir = Path(env.workdir) / f"soak-{time.time_ns()}"
    workdir.mkdir()
    handlers = "".join(
        f'  - {{id: h{n}, on: subscriber/created, type: python, function: "bench.payload:noop"}}\n'
        for n in range(1, HANDLERS + 1)
    )
    config = workdir / "bridge.yaml"
    config.write_text(
        CONFIG.format(db=workdir / "state.db", ui="true" if ui else "false", handlers=handlers)
    )
    bridge = BridgeProcess(config, workdir)
    bridge.start()
    try:
        await bridge.wait_ready()
        assert bridge.proc is not None
        process = psutil.Process(bridge.proc.pid)
        await asyncio.sleep(3.0)  # imports settled
        idle_samples = []
        for _ in range(5):
            idle_samples.append(rss_mb(process))
            await asyncio.sleep(0.5)
        idle = statistics.median(idle_samples)
        load = Load(bridge.url)
        clients = asyncio.create_task(load.run())
        samples: list[tuple[float, float]] = []
        breakdown: list[tuple[float, float, float, float]] = []
        begin = time.monotonic()
        while (now := time.monotonic() - begin) < seconds:
            samples.append((round(now, 3), rss_mb(process)))
            breakdown.append((round(now, 3), *parts_mb(process)))
            load.handled = await bridge.metric("bridge_runs_total") / HANDLERS
            await asyncio.sleep(max(0.0, len(samples) - (time.monotonic() - begin)))
        load.stop.set()
        await clients
        handled = await bridge.metric("bridge_runs_total") / HANDLERS
        elapsed = time.monotonic() - begin
        await asyncio.sleep(10.0)
        after = rss_mb(process)
        dropped = await bridge.metric("bridge_history_dropped_total")
        files = {p.name: p.stat().st_size / 2**20 for p in workdir.glob("state.db*")}
    finally:
        await bridge.stop()
    half = len(samples) // 2
    last = slope(samples[half:])
    peak = max(s[1] for s in samples)
    rate = handled / elapsed
    return {
        "unit": "MB",
        "rss_mb": {"idle": idle, "peak": peak, "end": samples[-1][1], "after_10s": after},
        "slope_mb_per_s": {"first_half": slope(samples[:half]), "last_half": last},
        "load": {
            "seconds": seconds,
            "ui_and_history": ui,
            "batch": BATCH,
            "clients": CLIENTS,
            "handlers": HANDLERS,
            "posted": load.posted,
            "handled_events": handled,
            "events_per_s": rate,
            "post_errors": load.errors,
            "history_dropped": dropped,
        },
        "samples": samples,
        # What grows, for the slope: (seconds, shared MB (file mappings: the SQLite WAL
        # index), data MB (the heap), anonymous RSS MB); the store's files at the end.
        "breakdown": breakdown,
        "slopes_mb_per_s_last_half": {
            name: slope([(b[0], b[i]) for b in breakdown[half:]])
            for i, name in ((1, "shared"), (2, "data"), (3, "anonymous"))
        },
        "store_files_mb": files,
        "variants": {},
        "ratios": {},
        "goals": [
            goal("soak: idle RSS (MB)", idle, "<=", 80.0),
            goal(
                f"soak: peak RSS under load, UI+history on (MB, limit {LIMIT_MB:g}Mi)",
                peak,
                "<=",
                LIMIT_MB,
            ),
            goal("soak: RSS slope, last half (MB/s)", last, "<=", 0.01),
        ],
    }
