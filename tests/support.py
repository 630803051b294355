"""The one harness of the e2e and chaos suites (some integration tests use it too).

What every test that runs ``bridge run`` as a real process needs, in one place, by section:

* the process: ``free_port``, ``BridgeProcess`` (start, ``wait_ready``, ``kill``,
  ``terminate``, ``stop``, metrics, ``ready``, ``dead_letters``), ``died``,
  ``bridge_command`` (any other subcommand, run to its end),
  ``recording_bridge`` (one whose recorder handlers write a record file),
  ``kafka_replicas``;
* config: ``write_config`` (the file) with ``recorder``, ``rabbitmq_connector``,
  ``sqs_connector`` and ``kafka_connector`` for its parts; ``write_kafka_config``;
* HTTP: ``answers_200``, ``serve_posts`` (a local receiver), ``post_events``,
  ``cloudevent``, ``signed_debezium``;
* waiting: ``until``, the one poll loop with a deadline; ``sigkill_mid_stream``;
* counting what ran: ``read_lines``, ``line_count``, ``executions``, ``seen``,
  ``runs_by_event``, ``wait_all_ran``;
* the SQLite store: ``query``, ``inbox_pending``, ``ledger_succeeded``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from standardwebhooks.webhooks import Webhook

ROOT = Path(__file__).resolve().parent.parent
RECORDER = "tests.apps.recorder"
READY_WITHIN = 120.0  # a bridge starts in ~2 s; far slower on a machine busy with other tests

# --------------------------------------------------------------------------- the process


_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=512)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now.

    Under pytest-xdist each worker takes ports of its own class (``port // 2`` modulo the
    number of workers; the kernel hands ``bind`` odd ports first), so two workers never
    pick the same port in the time between this check and their server's ``bind``. Nor
    does one process get the same port twice in a row: a port handed out is closed again
    at once, so the kernel may offer it to the next call before its server has bound it
    (a data server and its Sentinel once got one port between them).
    """
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    with contextlib.ExitStack() as held:  # held open while looking: each try is a new port
        for _ in range(64 * count):
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if (port // 2) % count == index % count and port not in _HANDED_OUT:
                _HANDED_OUT.append(port)
                return port
    raise RuntimeError(f"no free port of worker {worker}'s class in {64 * count} tries")


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
        """The server's base URL (``http://127.0.0.1:<port>``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the process (again), as the next generation (``BRIDGE_TEST_GENERATION``);
        its output is appended to ``log_path``. Does not wait for it to be ready."""
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
        return await self.exited(within)

    async def exited(self, within: float = 60.0) -> int:
        """Wait for the process to exit on its own (no signal sent); returns its exit code.

        Raises:
            TimeoutError: it still runs after ``within`` seconds.
        """
        if self.proc is None:
            return 0
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

    async def ready(self) -> bool:
        """Whether /readyz answers 200 right now (False when it does not answer)."""
        return await answers_200(f"{self.url}/readyz")

    async def dead_letters(self, **params: str) -> list[dict[str, Any]]:
        """The items of ``GET /v1/dead-letters`` with these query parameters."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/v1/dead-letters", params=params) as resp,
        ):
            items: list[dict[str, Any]] = (await resp.json())["items"]
            return items

    async def metrics_have(self, line: str) -> bool:
        """Whether ``line`` stands in /metrics right now."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/metrics") as resp:
            return line in (await resp.text())

    def exit_reason(self) -> str | None:
        """Why the process is gone (its exit code and log tail), or None while it runs."""
        if self.proc is not None and self.proc.poll() is not None:
            return f"bridge exited ({self.proc.returncode}):\n{self.log_tail()}"
        return None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the process's log (``<no log>`` if it cannot be read)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


async def thread_traced_sqlite(path: Path) -> tuple[Any, list[str]]:
    """An open ``SqliteStore`` at ``path`` and the statements its store's thread runs from
    now on (the event loop's own connections are not traced)."""
    from bridge.store.sqlite import SqliteStore

    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    on_thread: list[str] = []
    await store._call(lambda conn: conn.set_trace_callback(on_thread.append))
    on_thread.clear()
    return store, on_thread


def died(*procs: BridgeProcess) -> str | None:
    """The first of ``procs`` that has exited, as ``BridgeProcess.exit_reason`` says; else None."""
    for proc in procs:
        reason = proc.exit_reason()
        if reason is not None:
            return reason
    return None


def bridge_command(
    *args: str, cwd: Path = ROOT, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``bridge ARGS...`` as a user runs it, to its end: exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=timeout,
        check=False,
    )


def recording_bridge(
    config: Path, workdir: Path, record_name: str = "record.txt", **env: str
) -> tuple[BridgeProcess, Path]:
    """A ``BridgeProcess`` (not started) whose recorder handlers append to ``workdir/record_name``.

    ``env`` adds environment variables; returns the process and the record file.
    """
    record = workdir / record_name
    return BridgeProcess(config, workdir, env={"BRIDGE_TEST_RECORD": str(record), **env}), record


def kafka_replicas(
    root: Path, names: Iterable[str], env: Mapping[str, str] | None = None, **config: Any
) -> list[BridgeProcess]:
    """One ``BridgeProcess`` (not started) per name: each in a directory ``root/<name>`` of its
    own, with its own config there (``write_kafka_config(**config)``) and its recorder
    writing ``root/<name>/record.txt``; ``env`` adds environment variables to each."""
    procs = []
    for name in names:
        workdir = root / name
        workdir.mkdir()
        path = write_kafka_config(workdir, **config)
        procs.append(recording_bridge(path, workdir, **(env or {}))[0])
    return procs


# --------------------------------------------------------------------------- config


def write_config(
    directory: Path,
    *,
    handlers: list[dict[str, Any]],
    connectors: Mapping[str, Any] | None = None,
    store: str | None = None,
    drain_timeout: str = "5s",
    events: Mapping[str, Any] | None = None,
    file_name: str = "bridge.yaml",
    **top: Any,
) -> Path:
    """Write a bridge config file into ``directory``; return its path.

    Args:
        handlers: the ``handlers`` list.
        connectors: the ``connectors`` mapping (left out when None).
        store: the store URL (default: SQLite ``directory/state.db``).
        drain_timeout: the top-level ``drain_timeout``.
        events: the ``events`` catalog (default: ``test/*`` without a schema).
        file_name: the file's name in ``directory``.
        top: further top-level keys (``telemetry``, ``server``, ``defaults``, ...).
    """
    config: dict[str, Any] = {
        "version": 1,
        "store": store or f"sqlite:///{directory}/state.db",
        "drain_timeout": drain_timeout,
        **top,
        "events": dict(events or {"test/*": {"schema": "none"}}),
    }
    if connectors is not None:
        config["connectors"] = dict(connectors)
    config["handlers"] = handlers
    path = directory / file_name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def recorder(
    handler_id: str, function: str = "record", *, on: Any = "test/item", **extra: Any
) -> dict[str, Any]:
    """A python handler running ``tests.apps.recorder:<function>`` on ``on``; ``extra`` adds keys."""
    return {
        "id": handler_id,
        "on": on,
        "type": "python",
        "function": f"{RECORDER}:{function}",
        **extra,
    }


def rabbitmq_connector(url: str, queue: str, **consume: Any) -> dict[str, Any]:
    """A RabbitMQ connector consuming ``queue`` as events ``test/item`` (reconnecting every
    500 ms); ``consume`` adds to (or overrides) its ``consume`` block."""
    return {
        "type": "rabbitmq",
        "url": url,
        "reconnect_interval": "500ms",
        "consume": {"queue": queue, "event": {"type": "test/item"}, **consume},
    }


def sqs_connector(queue: str, **consume: Any) -> dict[str, Any]:
    """An SQS connector on ``${SQS_ENDPOINT}`` consuming ``queue`` as events ``test/item``
    (long polls of 2 s, depth every 1 s); ``consume`` adds to (or overrides) its ``consume``."""
    return {
        "type": "sqs",
        "endpoint_url": "${SQS_ENDPOINT}",
        "consume": {
            "queue": queue,
            "wait_time_seconds": 2,
            "depth_interval": "1s",
            "event": {"type": "test/item"},
            **consume,
        },
    }


def kafka_connector(bootstrap: str, topic: str, group: str, **consume: Any) -> dict[str, Any]:
    """A Kafka connector consuming ``topic`` in ``group`` from the earliest offset as events
    ``test/msg``, with short session, heartbeat, commit and fetch intervals; ``consume``
    adds to (or overrides) its ``consume`` block."""
    return {
        "type": "kafka",
        "bootstrap_servers": bootstrap,
        "consume": {
            "topics": [topic],
            "group_id": group,
            "start_from": "earliest",
            "session_timeout": "3s",
            "heartbeat_interval": "1s",
            "commit_interval": "500ms",
            "fetch_max_wait": "100ms",
            "event": {"type": "test/msg"},
            **consume,
        },
    }


def write_kafka_config(
    directory: Path,
    *,
    bootstrap: str,
    topic: str,
    group: str,
    handlers: list[dict[str, Any]],
    consume: Mapping[str, Any] | None = None,
    connectors: Mapping[str, Any] | None = None,
    drain_timeout: str = "20s",
    **top: Any,
) -> Path:
    """A config with one Kafka connector ``in`` (``kafka_connector``) and ``connectors``,
    the given handlers, a SQLite store in ``directory`` (unless ``store=`` says otherwise)
    and commit/rebalance lines logged (JSON, ``connectors.kafka`` at DEBUG); ``top`` goes
    to ``write_config``."""
    return write_config(
        directory,
        handlers=handlers,
        connectors={
            "in": kafka_connector(bootstrap, topic, group, **(consume or {})),
            **(connectors or {}),
        },
        drain_timeout=drain_timeout,
        telemetry={
            "logs": {"format": "json", "level": "INFO", "levels": {"connectors.kafka": "DEBUG"}}
        },
        **top,
    )


# --------------------------------------------------------------------------- HTTP


async def answers_200(url: str, session: aiohttp.ClientSession | None = None) -> bool:
    """Whether ``GET url`` answers 200 right now; False when the connection fails.

    Uses ``session`` when given, else a session of its own.
    """
    try:
        if session is not None:
            async with session.get(url) as resp:
                return resp.status == 200
        async with aiohttp.ClientSession() as own, own.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def serve_posts(
    routes: Mapping[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
    port: int | None = None,
    **runner_options: Any,
) -> tuple[web.AppRunner, int]:
    """Serve an aiohttp application answering POST on each of ``routes`` (path -> handler)
    on 127.0.0.1 (on ``port``, else a free one); ``runner_options`` go to ``web.AppRunner``.

    Returns:
        The runner (``await runner.cleanup()`` stops it) and the port.
    """
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


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


def cloudevent(event_id: str, event_type: str, data: Any, source: str = "test") -> dict[str, Any]:
    """A structured CloudEvent (spec 1.0) as the event API takes it."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": event_type,
        "data": data,
    }


def signed_debezium(n: int, key: str, first_lsn: int) -> tuple[bytes, dict[str, str]]:
    """A Debezium insert into ``shop.public.products`` (row ``n``, LSN ``first_lsn + n``),
    signed for Standard Webhooks with ``key`` (a fresh timestamp each call).

    Returns:
        The body, and the ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
        headers.
    """
    change = {
        "before": None,
        "after": {"id": n, "sku": f"sku-{n}"},
        "source": {
            "connector": "postgresql",
            "db": "shop",
            "schema": "public",
            "table": "products",
            "lsn": first_lsn + n,
            "ts_ms": 1700000000000 + n,
        },
        "op": "c",
        "ts_ms": 1700000000000 + n,
    }
    body = orjson.dumps({"schema": {"type": "struct"}, "payload": change})
    msg_id = f"msg_{n}"
    moment = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(key).sign(msg_id, moment, body.decode()),
    }
    return body, headers


# --------------------------------------------------------------------------- waiting


async def until(
    check: Callable[[], bool | Awaitable[bool]],
    within: float,
    what: str,
    *,
    every: float = 0.1,
    watch: Iterable[BridgeProcess] = (),
) -> float:
    """Poll ``check()`` every ``every`` seconds until it holds; return the seconds it took.

    Raises:
        AssertionError: after ``within`` seconds, saying ``what`` did not happen (with the
            log tails of the ``watch`` bridges), or at once when one of the ``watch``
            bridges has exited. ``watch`` is read at every poll, so a list the caller
            changes meanwhile is followed.
    """
    start = time.monotonic()
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - start
        problem = died(*watch)
        if problem is not None:
            raise AssertionError(f"{problem}\n(while waiting for {what})")
        if time.monotonic() - start > within:
            tails = "".join(f"\n---\n{proc.log_tail()}" for proc in watch)
            raise AssertionError(f"timed out after {within}s waiting for {what}{tails}")
        await asyncio.sleep(every)


async def sigkill_mid_stream(
    proc: BridgeProcess, record: Path, total: int, handlers: Sequence[str] = ("a", "b")
) -> dict[str, int]:
    """The SIGKILL scenario on a started bridge whose messages carry the keys ``0..total-1``.

    Waits until it is ready and its first handler has run a third of the keys (120 s),
    SIGKILLs it, restarts it, and waits until every handler has run every key (180 s).

    Returns:
        handler -> how many distinct keys it had run at the kill.

    Raises:
        AssertionError: from ``until`` when a wait runs out.
    """
    # Each check counts lines first: parsing the whole record ten times a second would
    # take CPU from the bridge, and a handler's keys cannot be there before their lines.
    third = total // 3
    await proc.wait_ready()
    await until(
        lambda: line_count(record) >= third and len(seen(record, handlers[0])) >= third,
        120,
        "a third processed",
    )
    proc.kill()
    done_before = {h: len(set(v)) for h, v in executions(record).items()}
    proc.start()
    await proc.wait_ready()
    everything = {str(n) for n in range(total)}
    await until(
        lambda: (
            line_count(record) >= total * len(handlers)
            and all(seen(record, h) == everything for h in handlers)
        ),
        180,
        "every message processed by every handler after the restart",
    )
    return done_before


# --------------------------------------------------------------------------- counting what ran


def read_lines(path: Path) -> list[str]:
    """The complete lines of a file that another process appends to (a torn last line is dropped)."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    return [line for line in lines[:-1] if line]


def line_count(*paths: Path) -> int:
    """Complete lines in the files so far (cheap: no parsing; a missing file counts 0)."""
    total = 0
    for path in paths:
        try:
            total += path.read_bytes().count(b"\n")
        except FileNotFoundError:
            continue
    return total


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


def runs_by_event(record: Path) -> Counter[tuple[str, str]]:
    """How many times each (handler, event id) ran, from a recorder's file."""
    out: Counter[tuple[str, str]] = Counter()
    for line in read_lines(record):
        _, handler, event_id, *_ = line.split(" ")
        out[(handler, event_id)] += 1
    return out


async def wait_all_ran(
    record: Path, db: Path, accepted: Collection[str], handlers: Sequence[str], within: float
) -> Counter[tuple[str, str]]:
    """Wait until every accepted event ran on every handler and the SQLite inbox at ``db``
    has nothing pending, or ``within`` seconds passed; return ``runs_by_event`` then.

    Never raises on the deadline: the caller asserts on what it returns.
    """
    deadline = time.monotonic() + within
    while True:
        runs = runs_by_event(record)
        missing = [(h, e) for e in accepted for h in handlers if runs[(h, e)] == 0]
        if (not missing and inbox_pending(db) == 0) or time.monotonic() > deadline:
            return runs
        await asyncio.sleep(0.25)


# --------------------------------------------------------------------------- the SQLite store


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of one SQL query on a SQLite store file."""
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def inbox_pending(db: Path) -> int:
    """Inbox entries not done yet in a SQLite store."""
    return int(query(db, "SELECT COUNT(*) FROM inbox WHERE done_at IS NULL")[0][0])


def ledger_succeeded(db: Path) -> set[tuple[str, str]]:
    """(handler, event id) of every branch the SQLite store's ledger holds as succeeded."""
    rows = query(db, "SELECT handler, event_id FROM ledger WHERE status = 'succeeded'")
    return {(h, e) for h, e in rows}


async def dev_output_with(config: Path, phrase: str, within: float = 30.0) -> str:
    """Run ``bridge dev -c config`` until its output holds ``phrase``, stop it with
    SIGINT, and return the output (fails when the phrase does not come ``within``)."""
    log_path = config.parent / "dev.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once, stopped below)
            [sys.executable, "-m", "bridge", "dev", "-c", str(config)],
            cwd=config.parent,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        await until(lambda: phrase in log_path.read_text(), within, repr(phrase))
        return log_path.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(proc.wait, 30)


def listening(port: int, within: float = 15.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def server_process(program: str, *args: str, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server (``redis-server``, ``nats-server``) of the test's own on its own ports,
    terminated afterwards; fails the test when the program is not installed."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed; this test needs it", pytrace=False)
    proc = subprocess.Popen(
        [path, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
