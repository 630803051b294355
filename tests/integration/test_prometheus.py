"""A real Prometheus scrapes a bridge under load; every dashboard panel's query answers.

Prometheus comes from Debian's ``prometheus`` package (``make prometheus``, which
``make test`` runs). The bridge serves the event API; a steady trickle of events runs
through handlers that succeed, retry once, park a retry in the store, and dead-letter,
plus an invalid event, so every metric family the dashboard shows has moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support import BridgeProcess, cloudevent, free_port, post_events, until, write_config

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "bridge-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus" / "bridge-alerts.yaml"
# What Grafana would put for the dashboard's variables, for a Prometheus scraping each second.
VARIABLES = {"$__rate_interval": "10s", "$instance": ".*"}
_METRIC = re.compile(r"\b((?:bridge|process|python)_[a-z_]+)\b")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel of the committed dashboard."""
    spec = importlib.util.spec_from_file_location("dashboard", DASHBOARD.with_name("dashboard.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    board = module.build()
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("prometheus is not installed: `make prometheus` installs Debian's package")
    return found


@contextlib.contextmanager
def prometheus(tmp: Path, target: str) -> Iterator[str]:
    """A private Prometheus scraping ``target`` every second, with the bridge's alert rules."""
    binary = prometheus_binary()  # before the log is open: a missing binary leaks no file
    port = free_port()
    shutil.copy(ALERTS, tmp / "bridge-alerts.yaml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["bridge-alerts.yaml"],
        "scrape_configs": [{"job_name": "bridge", "static_configs": [{"targets": [target]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - the child process owns it
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def instant(session: aiohttp.ClientSession, url: str, expr: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def load(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
    """Events at a steady trickle, after one whose retry is parked."""
    await post_events(session, url, [cloudevent("park", "test/park", {})])
    n = 0
    while not stop.is_set():
        await post_events(session, url, [cloudevent(f"e{n}", "test/job", {"n": n})])
        n += 1
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def loaded(bridge: BridgeProcess) -> AsyncIterator[aiohttp.ClientSession]:
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(load(session, bridge.url, stop))
        try:
            yield session
        finally:
            stop.set()
            await task


async def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path: Path) -> None:
    lucky = "tests.unit.test_metrics:second_time_lucky"
    config = write_config(
        tmp_path,
        handlers=[
            {"id": "ok", "on": "test/job", "type": "log"},
            {"id": "lucky", "on": "test/job", "type": "python", "function": lucky},
            {
                "id": "doomed",
                "on": "test/job",
                "type": "python",
                "function": "tests.unit.test_metrics:hopeless",
                "retry": {"attempts": 2, "min_delay": 0, "jitter": 0},
            },
            {
                "id": "parker",
                "on": "test/park",
                "type": "python",
                "function": lucky,
                "retry": {"attempts": 2, "min_delay": "2s", "max_delay": "2s", "jitter": 0},
            },
        ],
        defaults={"inline_retry_limit": "1s"},
    )
    bridge = BridgeProcess(config, tmp_path)
    bridge.start()
    try:
        await bridge.wait_ready()
        with prometheus(tmp_path, f"127.0.0.1:{bridge.port}") as prom:
            async with loaded(bridge) as session:
                await until(
                    lambda: bridge.metric(
                        "bridge_runs_total", handler="parker", outcome="succeeded"
                    ),
                    20,
                    "the parked run ran",
                    watch=[bridge],
                )

                async def scraped_enough() -> bool:
                    found = await instant(
                        session, prom, 'count_over_time(up{job="bridge"}[10s]) >= 5'
                    )
                    return bool(found)

                await until(scraped_enough, 20, "Prometheus scraped the bridge 5 times")
                names = await label_names(session, prom)
                problems = []
                for title, expr in dashboard_queries():
                    for name in _METRIC.findall(expr):
                        if name not in names:
                            problems.append(f"{title}: no metric {name}")
                    query = expr
                    for var, value in VARIABLES.items():
                        query = query.replace(var, value)
                    if not await instant(session, prom, query):
                        problems.append(f"{title}: no data for {query}")
                async with session.get(f"{prom}/api/v1/rules") as resp:
                    groups = (await resp.json())["data"]["groups"]
        assert problems == []
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 6
        assert all(r["health"] == "ok" for r in rules), rules
    finally:
        await bridge.stop()


async def label_names(session: aiohttp.ClientSession, url: str) -> set[str]:
    async with session.get(f"{url}/api/v1/label/__name__/values") as resp:
        return set((await resp.json())["data"])
