"""Benchmark: webhook ingress into the SQLite inbox, against a bare aiohttp handler, same run.

* bridge: ``python -m bridge run`` (a subprocess, fresh SQLite store each run) with a
  ``supabase`` webhook connector (shared-secret auth), each event committed to the
  inbox before the 202, then delivered to one no-op python handler (ledger on) by
  the same process as fast as it can, as in production. The headline figure.
* bridge_inbox_only: the same, but delivery held back (``api.max_in_flight: 1``
  and a handler that waits): what taking requests into the inbox costs by itself,
  as during a burst that handlers drain later.
* bare: an aiohttp server (a subprocess too) whose handler reads the body and
  answers 202 with a small JSON body, storing nothing.

All are driven from this process with aiohttp client coroutines over keep-alive
connections, with the same Supabase ``INSERT`` payload (~150 bytes):

* latency: a fixed rate (``RATE``, default 500 requests/s) for ``SECONDS``; each
  request's latency is measured from its scheduled send time to its answer (so a
  stall is not hidden by the generator waiting), the first second dropped as warm-up.
* throughput: ``CONCURRENCY`` requests in flight, back to back, for ``SECONDS``;
  requests answered 202 per second.

``RUNS`` runs of each, interleaved, medians reported. The load generator shares
this 2-core machine with the server (about one core), and the bridge's event loop
shares the GIL with its SQLite thread; other work on the machine moves the figures
by 10-20 %, so the load average before the run is recorded.

Run: ``.venv/bin/python -m bench.webhook``; writes bench/results/webhook.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.common import percentile, summary, write
from bridge.server import wait_until_serving

ROOT = Path(__file__).resolve().parent.parent

RATE = int(os.environ.get("BENCH_WEBHOOK_RATE", "500"))
SECONDS = float(os.environ.get("BENCH_WEBHOOK_SECONDS", "10"))
CONCURRENCY = int(os.environ.get("BENCH_WEBHOOK_CONCURRENCY", "64"))
RUNS = int(os.environ.get("BENCH_WEBHOOK_RUNS", "5"))
SECRET = "bench-secret"

CONFIG = """\
version: 1
store: sqlite:///{db}
telemetry: {{logs: {{format: json, level: ERROR}}}}
server: {{api: {{max_in_flight: {max_in_flight}}}}}
events:
  db/*: {{schema: none}}
connectors:
  supabase:
    type: webhook
    provider: supabase
    auth: {{secret: {secret}}}
handlers:
  - id: handler
    on: "db/*"
    type: python
    function: "{function}"
    timeout: 1h
    retry: {{attempts: 1}}
"""
VARIANTS = {
    "bridge": {"max_in_flight": 1000, "function": "bench.payload:noop_1"},
    "bridge_inbox_only": {"max_in_flight": 1, "function": "bench.webhook:held"},
}
KINDS = ("bare", "bridge", "bridge_inbox_only")


async def held(event: Any, ctx: Any) -> None:
    """Holds delivery back for the inbox-only variant."""
    await asyncio.sleep(3600)


def payload(n: int) -> bytes:
    return orjson.dumps(
        {
            "type": "INSERT",
            "table": "users",
            "schema": "public",
            "record": {"id": n, "email": f"user{n}@example.com", "plan": "pro"},
            "old_record": None,
        }
    )


HEADERS = {"content-type": "application/json", "x-webhook-secret": SECRET}


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare_server(port: int) -> None:
    """The baseline: read the body, answer 202, store nothing."""
    from aiohttp import web

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"accepted":true}', status=202, content_type="application/json")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hooks/supabase", accept)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


class Server:
    """A server subprocess: the bridge or the bare handler."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.workdir = workdir
        self.db = workdir / f"{kind}-{self.port}.db"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if kind in VARIANTS:
            config = workdir / f"bridge-{self.port}.yaml"
            config.write_text(CONFIG.format(db=self.db, secret=SECRET, **VARIANTS[kind]))
            argv = ["-m", "bridge", "run", "-c", str(config), "--listen", f"127.0.0.1:{self.port}"]
        else:
            argv = ["-m", "bench.webhook", "--bare-server", str(self.port)]
        self.proc = subprocess.Popen([sys.executable, *argv], cwd=workdir, env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/supabase"

    async def ready(self) -> None:
        await wait_until_serving(f"http://127.0.0.1:{self.port}/healthz", timeout=30)

    def stored(self) -> tuple[int, int]:
        """Inbox rows, and how many are still waiting for their handler (bridge only)."""
        if self.kind not in VARIANTS:
            return 0, 0
        with sqlite3.connect(self.db) as conn:
            total, pending = conn.execute(
                "SELECT COUNT(*), SUM(done_at IS NULL) FROM inbox"
            ).fetchone()
        return int(total), int(pending or 0)

    def stop(self) -> None:
        self.proc.kill()  # a held-back delivery would wait for the drain timeout
        self.proc.wait(60)


# --------------------------------------------------------------------------- load


async def fixed_rate(url: str, rate: int, seconds: float, offset: int) -> dict[str, Any]:
    """Send ``rate`` requests per second; latency from each one's scheduled time."""
    loop = asyncio.get_running_loop()
    total = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(n: int, due: float) -> None:
            async with session.post(url, data=payload(offset + n), headers=HEADERS) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if n >= rate:  # the first second warms up
                latencies.append(loop.time() - due)

        start = loop.time() + 0.1
        tasks = []
        for n in range(total):
            due = start + n / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, due)))
        await asyncio.gather(*tasks)
    return {
        "requests": total,
        "statuses": statuses,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
    }


async def max_rate(url: str, concurrency: int, seconds: float, offset: int) -> dict[str, Any]:
    """Requests answered 202 per second with ``concurrency`` in flight."""
    loop = asyncio.get_running_loop()
    accepted = 0
    others = 0
    counter = iter(range(offset, offset + 10_000_000))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up the connections and the server first.
        end = loop.time() + 1.0

        async def worker(until: float, count: bool) -> None:
            nonlocal accepted, others
            while loop.time() < until:
                async with session.post(url, data=payload(next(counter)), headers=HEADERS) as r:
                    await r.read()
                    if count:
                        if r.status == 202:
                            accepted += 1
                        else:
                            others += 1

        await asyncio.gather(*(worker(end, False) for _ in range(concurrency)))
        start = loop.time()
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
        elapsed = loop.time() - start
    return {"rps": accepted / elapsed, "accepted": accepted, "not_202": others}


async def one_run(kind: str, workdir: Path, run: int) -> dict[str, Any]:
    server = Server(kind, workdir)
    try:
        await server.ready()
        latency = await fixed_rate(server.url, RATE, SECONDS, run * 10_000_000)
        throughput = await max_rate(server.url, CONCURRENCY, SECONDS, run * 10_000_000 + 5_000_000)
        total, pending = server.stored()
        return {**latency, **throughput, "inbox_rows": total, "inbox_pending_at_end": pending}
    finally:
        server.stop()


async def main() -> None:
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(RUNS):
            for kind in KINDS:
                outcome = await one_run(kind, Path(tmp), run)
                results[kind].append(outcome)
                print(
                    f"run {run + 1} {kind:17s} p50 {outcome['p50_ms']:.2f} ms"
                    f"  p99 {outcome['p99_ms']:.2f} ms  max rate {outcome['rps']:.0f}/s"
                    f"  statuses {outcome['statuses']}",
                    flush=True,
                )

    def med(kind: str, key: str) -> dict[str, float]:
        return summary([r[key] for r in results[kind]])

    bare_rps = med("bare", "rps")
    figures: dict[str, Any] = {"bare_max_rps": bare_rps}
    for kind in ("bridge", "bridge_inbox_only"):
        rps = med(kind, "rps")
        figures[f"{kind}_max_rps"] = rps
        figures[f"{kind}_ratio"] = rps["median"] / bare_rps["median"]
    for kind in KINDS:
        figures[f"{kind}_p50_ms_at_rate"] = med(kind, "p50_ms")
        figures[f"{kind}_p99_ms_at_rate"] = med(kind, "p99_ms")
    p99 = figures["bridge_p99_ms_at_rate"]["median"]
    path = write(
        "webhook",
        {
            "setup": {
                "rate": RATE,
                "seconds": SECONDS,
                "concurrency": CONCURRENCY,
                "payload_bytes": len(payload(0)),
                "handlers": 1,
                "store": "sqlite (inbox + ledger)",
                "load_average_before": load_before,  # other work on the machine skews the figures
            },
            **figures,
            "runs": results,
            "goals": {
                "p99_under_50ms_at_500rps": p99 < 50.0,
                "ratio_at_least_0.3": figures["bridge_ratio"] >= 0.3,
                "ratio_at_least_0.3_inbox_only": figures["bridge_inbox_only_ratio"] >= 0.3,
            },
        },
    )
    print(
        f"bridge p99 {p99:.2f} ms at {RATE}/s; max {figures['bridge_max_rps']['median']:.0f}/s"
        f" (inbox only {figures['bridge_inbox_only_max_rps']['median']:.0f}/s)"
        f" vs bare {bare_rps['median']:.0f}/s: ratio {figures['bridge_ratio']:.2f}"
        f" (inbox only {figures['bridge_inbox_only_ratio']:.2f}) -> {path}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
    else:
        t0 = time.perf_counter()
        asyncio.run(main())
        print(f"done in {time.perf_counter() - t0:.0f}s")
