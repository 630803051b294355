"""Helpers for tests that run the ``bridge`` command as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BridgeProcess:
    """``python -m bridge run`` in a subprocess, with its logs in a file.

    Args:
        config: the config file.
        workdir: where the process runs (relative store paths land here).
        env: extra environment variables.
        port: the server port (default: a free one).
    """

    def __init__(
        self,
        config: Path,
        workdir: Path,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.port = port or free_port()
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self.log_path = workdir / "bridge.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.generation += 1
        env = {**self.env, "BRIDGE_TEST_GENERATION": str(self.generation)}
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge",
                "run",
                "-c",
                str(self.config),
                "--listen",
                f"127.0.0.1:{self.port}",
            ],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until /readyz answers 200; raise with the log's tail if the process died."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"bridge exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"bridge not ready after {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    async def stop(self, within: float = 60.0) -> int:
        """SIGTERM and wait without blocking the event loop (the test may be serving the bridge)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bridge did not exit within {within}s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's series whose labels include ``labels``, from /metrics."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/metrics") as resp:
            text = await resp.text()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            series, _, label_text = head.partition("{")
            if series != name:
                continue
            if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    async def wait_metric(
        self, name: str, at_least: float, within: float = 30.0, **labels: str
    ) -> float:
        """Wait until a metric reaches ``at_least``; returns its value."""
        deadline = time.monotonic() + within
        while True:
            value = await self.metric(name, **labels)
            if value >= at_least:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{name}{labels} stayed at {value} < {at_least}:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


async def post_events(
    session: aiohttp.ClientSession, url: str, events: list[dict[str, Any]]
) -> tuple[int, Any]:
    """POST a batch of CloudEvents to the event API; returns (status, JSON body)."""
    async with session.post(
        f"{url}/v1/events",
        json=events,
        headers={"content-type": "application/cloudevents-batch+json"},
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def read_lines(path: Path) -> list[str]:
    """The complete lines of a file that another process appends to (a torn last line is dropped)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    return [line for line in lines[:-1] if line]


def executions(record: Path) -> dict[str, list[tuple[int, str]]]:
    """handler -> [(generation, key)] for every execution recorded by tests.apps.recorder, in order."""
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line in read_lines(record):
        generation, handler, _event, _attempt, key = line.split(" ")
        out[handler].append((int(generation), key))
    return out


def seen(record: Path, handler: str) -> set[str]:
    """The keys ``handler`` has run for."""
    return {key for _, key in executions(record)[handler]}


async def until(check: Callable[[], bool | Awaitable[bool]], within: float, what: str) -> None:
    """Wait until ``check()`` holds; fail after ``within`` seconds saying what did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {within}s")
        await asyncio.sleep(0.1)
