"""Dead-letter replay keeps the letters and the run history true, on SQLite and PostgreSQL.

A running bridge (in this process, on a real port) and the `bridge dlq` command
(its entry point, with a store connection of its own): a replay that would run nothing is
refused and the letter stays pending, also when that is only known once the
bridge takes the replay; replaying one branch never makes an event look
succeeded while another is dead-lettered, nor moves when it was received; a
discarded letter replays only with force.
"""

from __future__ import annotations

import asyncio
import io
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge import Context, Event
from bridge.app import load_config_text
from bridge.app.cli import main
from bridge.app.runtime import Runtime
from bridge.store import create_store
from bridge.store.contracts import LedgerEntry
from tests.fixtures.postgres import drop_schema
from tests.support import cloudevent, free_port, post_events

RUNS: list[tuple[str, str]] = []
OPEN: set[str] = set()


async def steady(event: Event[Any], ctx: Context) -> None:
    RUNS.append((ctx.handler_id, event.id))


async def gated(event: Event[Any], ctx: Context) -> None:
    if ctx.handler_id not in OPEN:
        raise RuntimeError("the gate is closed")
    RUNS.append((ctx.handler_id, event.id))


CONFIG = """\
version: 1
store: {store}
server: {{listen: "127.0.0.1:{port}", ui: {{enabled: true}}}}
defaults: {{retry: {{attempts: 1}}}}
events:
  job/run: {{schema: none}}
handlers:
  - {{id: ok, on: job/run, type: python, function: "{module}:steady"}}
  - {{id: a, on: job/run, type: python, function: "{module}:gated", idempotency_key: "{{data.order}}"}}
  - {{id: b, on: job/run, type: python, function: "{module}:gated"}}
"""


class Bridge:
    """A bridge running in this process, its store URL and config file for `bridge dlq`."""

    def __init__(self, store: str, tmp_path: Path) -> None:
        self.store = store
        self.port = free_port()
        self.config = tmp_path / "bridge.yaml"
        self.config.write_text(
            textwrap.dedent(CONFIG.format(store=store, port=self.port, module=__name__))
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.runtime: Runtime | None = None
        self._task: asyncio.Task[None] | None = None
        self.session = aiohttp.ClientSession()

    async def start(self) -> None:
        self.runtime = Runtime(load_config_text(self.config.read_text(), {}))
        self._task = asyncio.create_task(self.runtime.run())
        for _ in range(200):
            if self._task.done():
                self._task.result()
            try:
                async with self.session.get(f"{self.url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("the bridge did not become ready")

    async def stop(self) -> None:
        if self.runtime is not None and self._task is not None:
            self.runtime.request_stop()
            await self._task
        self.runtime, self._task = None, None

    async def settle(self) -> None:
        """Wait until the inbox is drained and nothing runs; then write the history."""
        runtime = self.runtime
        assert runtime is not None
        for _ in range(300):
            pending = await runtime.store.inbox_pending(0, 1)
            if not pending and not any(s.tasks for s in runtime.slots):
                if runtime.history is not None:
                    await runtime.history.flush()
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the inbox did not drain")

    async def call(self, method: str, path: str) -> tuple[int, Any]:
        headers = {}
        if method != "GET" and path.startswith("/ui/"):  # the UI's actions carry its token
            async with self.session.get(f"{self.url}/ui") as resp:
                page = await resp.text()
            headers["X-CSRF-Token"] = page.split('name="bridge-csrf" content="')[1].split('"')[0]
        async with self.session.request(method, f"{self.url}{path}", headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def letters(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every dead letter by (handler, event id), from the event API."""
        status, body = await self.call("GET", "/v1/dead-letters?limit=1000")
        assert status == 200
        return {(d["handler"], d["event_id"]): d for d in body["items"]}

    async def dlq(self, *args: str) -> Outcome:
        """`bridge dlq ...` on this bridge's config: the command's own entry point, in a
        thread (a process per call would only add its start-up to the test)."""

        def command() -> Outcome:
            out, err = io.StringIO(), io.StringIO()
            with redirect_stdout(out), redirect_stderr(err):
                code = main(["dlq", "-c", str(self.config), *args])
            return Outcome(code, out.getvalue(), err.getvalue())

        return await asyncio.to_thread(command)


@dataclass
class Outcome:
    """What `bridge dlq` did: its exit code and output."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    postgres = request.getfixturevalue("postgres")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{postgres}?schema={schema}"
    asyncio.run(drop_schema(schema))


@pytest.fixture
async def bridge(store_url: str, tmp_path: Path) -> AsyncIterator[Bridge]:
    RUNS.clear()
    OPEN.clear()
    b = Bridge(store_url, tmp_path)
    try:
        await b.start()
        yield b
    finally:
        await b.stop()
        await b.session.close()


async def _dead_lettered(bridge: Bridge, *orders: int) -> dict[tuple[str, str], dict[str, Any]]:
    """One event per order (e7 for order 7 ...): `ok` succeeds for each, `a` and `b`
    dead-letter; returns the letters by (handler, event id)."""
    status, _ = await post_events(
        bridge.session,
        bridge.url,
        [cloudevent(f"e{n}", "job/run", {"order": n}, source="shop") for n in orders],
    )
    assert status == 202
    await bridge.settle()
    letters = await bridge.letters()
    assert sorted(letters) == sorted((h, f"e{n}") for h in "ab" for n in orders)
    assert sorted(RUNS) == sorted(("ok", f"e{n}") for n in orders)
    return letters


async def test_replay_refuses_no_ops_keeps_history_true_and_needs_force_for_discarded(
    bridge: Bridge,
) -> None:
    letters = await _dead_lettered(bridge, 7, 8)
    status, before = await bridge.call("GET", "/ui/api/events/e7")
    assert status == 200 and before["status"] == "partial"
    _, before_e8 = await bridge.call("GET", "/ui/api/events/e8")
    la7, lb7 = letters["a", "e7"]["id"], letters["b", "e7"]["id"]

    # `a` is fixed; replaying its letter runs it once.
    OPEN.add("a")
    status, body = await bridge.call("POST", f"/v1/dead-letters/{la7}/replay")
    assert status == 202, body
    await bridge.settle()
    assert RUNS.count(("a", "e7")) == 1
    _, event = await bridge.call("GET", "/ui/api/events/e7")
    # b is still dead-lettered: the event is not succeeded, and it arrived when it arrived.
    assert event["status"] == "partial"
    assert (event["received_at"], event["source"]) == (before["received_at"], before["source"])
    assert {r["handler"]: r["status"] for r in event["runs"]} == {
        "ok": "succeeded",
        "a": "succeeded",
        "b": "dead_lettered",
    }
    _, listed = await bridge.call("GET", "/ui/api/events?status=partial")
    assert {e["id"] for e in listed["items"]} == {"e7", "e8"}

    # Replays that would run nothing: a's letter again, b's letter to `ok`.
    status, body = await bridge.call("POST", f"/v1/dead-letters/{la7}/replay")
    assert status == 409 and "already succeeded" in body["error"], body
    status, body = await bridge.call("POST", f"/v1/dead-letters/{lb7}/replay?handler=ok")
    assert status == 409 and "already succeeded" in body["error"], body
    status, body = await bridge.call("POST", f"/ui/api/dead-letters/{lb7}/replay?handler=ok")
    assert status == 409 and "already succeeded" in body["error"], body
    await bridge.settle()
    now = await bridge.letters()
    assert (now["a", "e7"]["status"], now["b", "e7"]["status"]) == ("replayed", "pending")
    assert sorted(RUNS) == [("a", "e7"), ("ok", "e7"), ("ok", "e8")]

    # A discarded letter replays only when forced.
    status, _ = await bridge.call("POST", f"/v1/dead-letters/{lb7}/discard")
    assert status == 200
    OPEN.add("b")
    status, body = await bridge.call("POST", f"/v1/dead-letters/{lb7}/replay")
    assert status == 409 and "discarded" in body["error"] and "force" in body["error"], body
    status, body = await bridge.call("POST", f"/ui/api/dead-letters/{lb7}/replay")
    assert status == 409 and "force" in body["error"], body
    await bridge.settle()
    assert (await bridge.letters())["b", "e7"]["status"] == "discarded"
    assert ("b", "e7") not in RUNS
    status, body = await bridge.call("POST", f"/v1/dead-letters/{lb7}/replay?force=true")
    assert status == 202, body
    await bridge.settle()
    assert RUNS.count(("b", "e7")) == 1
    assert (await bridge.letters())["b", "e7"]["status"] == "replayed"
    _, event = await bridge.call("GET", "/ui/api/events/e7")
    assert (event["status"], event["received_at"]) == ("succeeded", before["received_at"])

    # The same through `bridge dlq`: one error line, a non-zero exit, the letter unchanged.
    lb8 = letters["b", "e8"]["id"]
    for refused in (
        await bridge.dlq("replay", la7),
        await bridge.dlq("replay", lb8, "--handler", "ok"),
    ):
        assert refused.returncode == 1 and "already succeeded" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert (await bridge.dlq("discard", lb8)).returncode == 0
    refused = await bridge.dlq("replay", lb8)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    now = await bridge.letters()
    assert (now["a", "e7"]["status"], now["b", "e8"]["status"]) == ("replayed", "discarded")
    forced = await bridge.dlq("replay", lb8, "--force")
    assert forced.returncode == 0, forced.stderr
    await bridge.settle()  # the bridge polls the inbox for entries of other processes
    assert RUNS.count(("b", "e8")) == 1
    assert (await bridge.letters())["b", "e8"]["status"] == "replayed"
    _, event = await bridge.call("GET", "/ui/api/events/e8")
    # a's run of e8 is still dead-lettered (its letter pending): not succeeded.
    assert (event["status"], event["received_at"]) == ("partial", before_e8["received_at"])


async def test_a_replay_that_turns_out_to_run_nothing_leaves_its_letter_pending(
    bridge: Bridge,
) -> None:
    letters = await _dead_lettered(bridge, 7)
    la7 = letters["a", "e7"]["id"]
    # The replay is queued while the bridge is down; the check passes, as order 7 has
    # not succeeded for `a` yet.
    await bridge.stop()
    queued = await bridge.dlq("replay", la7)
    assert queued.returncode == 0, queued.stderr
    # Before the bridge takes it, another replica runs `a` for order 7 (event e9).
    store = create_store(bridge.store)
    await store.open()
    try:
        await store.ledger_record([LedgerEntry("a", "7", "e9", "succeeded")])
    finally:
        await store.close()
    OPEN.add("a")
    await bridge.start()
    await bridge.settle()
    # Nothing ran for the replay, and its letter is pending again, not "replayed".
    assert [r for r in RUNS if r[0] == "a"] == []
    assert (await bridge.letters())["a", "e7"]["status"] == "pending"
    _, event = await bridge.call("GET", "/ui/api/events/e7")
    assert event["status"] == "partial"
    refused = await bridge.dlq("replay", la7)
    assert refused.returncode == 1 and "nothing to replay" in refused.stderr
    assert (await bridge.letters())["a", "e7"]["status"] == "pending"
