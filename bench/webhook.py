"""Webhook ingress (scenario 4): the SQLite inbox against a bare aiohttp handler, same run.

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

* latency: fixed rates (100 and 500 requests/s) for ``SECONDS`` each; each
  request's latency is measured from its scheduled send time to its answer (so a
  stall is not hidden by the generator waiting), the first second dropped as warm-up.
* throughput: ``CONCURRENCY`` requests in flight, back to back, for ``SECONDS``;
  requests answered 202 per second.

The suite's runs of each, interleaved, medians reported. The load generator shares
this 2-core machine with the server (about one core), and the bridge's event loop
shares the GIL with its SQLite thread; other work on the machine moves the figures
by 10-20 %, so the load average before the run is recorded.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from bench.common import Env, goal, percentile, throughput_result
from bridge.server import wait_until_serving
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent

RATE = 500
SECONDS = 3.0
CONCURRENCY = 64
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


async def max_rate(
    url: str, concurrency: int, seconds: float, offset: int, cpu: Callable[[], float]
) -> dict[str, Any]:
    """Requests answered 202 per second with ``concurrency`` in flight, and the server's
    CPU microseconds per request meanwhile (``cpu()``: its CPU seconds so far)."""
    loop = asyncio.get_running_loop()
    accepted = 0
    others = 0
    counter = iter(range(offset, offset + 10_000_000))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up the connections and the server first.
        end = loop.time() + min(1.0, seconds / 2)

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
        start, cpu_start = loop.time(), cpu()
        await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
        elapsed, cpu_used = loop.time() - start, cpu() - cpu_start
    return {
        "rps": accepted / elapsed,
        "accepted": accepted,
        "not_202": others,
        "server_cpu_us_per_request": cpu_used / max(accepted + others, 1) * 1e6,
    }


async def one_run(
    kind: str, workdir: Path, rates: list[int], seconds: float, run: int
) -> dict[str, Any]:
    server = Server(kind, workdir)
    try:
        await server.ready()
        offset = run * 100_000_000
        out: dict[str, Any] = {"at_rate": {}}
        for i, rate in enumerate(rates):
            out["at_rate"][rate] = await fixed_rate(
                server.url, rate, seconds, offset + i * 10_000_000
            )
        process = psutil.Process(server.proc.pid)

        def cpu() -> float:
            times = process.cpu_times()
            return float(times.user + times.system)

        out.update(await max_rate(server.url, CONCURRENCY, seconds, offset + 90_000_000, cpu))
        out["inbox_rows"], out["inbox_pending_at_end"] = server.stored()
        return out
    finally:
        server.stop()


async def ingress(env: Env) -> dict[str, Any]:
    """Scenario 4: time to 202 at fixed rates, and the most requests per second."""
    rates = [RATE] if env.quick else [100, RATE]
    seconds = env.seconds(SECONDS, 1.2)
    kinds = KINDS[:2] if env.quick else KINDS
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for run in range(env.runs):  # interleaved, so load drift hits every kind alike
        for kind in kinds:
            outcome = await one_run(kind, env.workdir, rates, seconds, run)
            results[kind].append(outcome)
            at = outcome["at_rate"][RATE]
            print(
                f"  webhook run {run + 1} {kind:17s} p50 {at['p50_ms']:.2f} ms"
                f"  p99 {at['p99_ms']:.2f} ms at {RATE}/s, max rate {outcome['rps']:.0f}/s",
                flush=True,
            )

    def med(kind: str, pick: Any) -> float:
        return statistics.median(pick(r) for r in results[kind])

    samples = {f"{kind}_max_rps": [r["rps"] for r in results[kind]] for kind in kinds}
    cpu = {
        f"{kind}_max_rps": [r["server_cpu_us_per_request"] for r in results[kind]] for kind in kinds
    }
    result = throughput_result(
        "requests/s",
        samples,
        [("bridge_max_rps", "bare_max_rps"), ("bridge_inbox_only_max_rps", "bare_max_rps")],
        cpu,
        rates=rates,
        seconds_per_rate=seconds,
        concurrency=CONCURRENCY,
        payload_bytes=len(payload(0)),
        handlers=1,
        store="sqlite (inbox + ledger)",
    )
    result["max_rps"] = result.pop("variants")
    result["variants"] = {
        f"{kind}@{rate}": {
            "p50_ms": med(kind, lambda r, rate=rate: r["at_rate"][rate]["p50_ms"]),
            "p99_ms": med(kind, lambda r, rate=rate: r["at_rate"][rate]["p99_ms"]),
            "max_ms": med(kind, lambda r, rate=rate: r["at_rate"][rate]["max_ms"]),
            "not_202": med(
                kind,
                lambda r, rate=rate: sum(
                    n for s, n in r["at_rate"][rate]["statuses"].items() if s != 202
                ),
            ),
        }
        for rate in rates
        for kind in kinds
    }
    result["runs"] = results
    p99 = result["variants"][f"bridge@{RATE}"]["p99_ms"]
    result["goals"] = [
        goal(
            "webhook: bridge / bare aiohttp (max rps)",
            result["ratios"]["bridge_max_rps/bare_max_rps"],
            ">=",
            0.4,
            "bridge_max_rps/bare_max_rps",
        ),
        goal(f"webhook: bridge p99 ms at {RATE} rps", p99, "<=", 50.0),
    ]
    return result


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--bare-server":
    bare_server(int(sys.argv[2]))
