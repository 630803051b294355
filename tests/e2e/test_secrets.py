"""Secrets stay secret: a real ``bridge`` process is given known secret values (API and
admin tokens, a webhook secret, credentials in an HTTP handler's URL, a RabbitMQ
password that the broker refuses, a PostgreSQL password) and every output it
produces is searched for them: its log, every HTTP answer (health, readiness,
metrics, event API, webhooks, dead letters), the dead letters in the store,
``bridge validate`` and ``bridge dlq`` output, and the output of runs that fail
to start because of those credentials.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support import ROOT, BridgeProcess, free_port

SECRETS = {
    "API_TOKEN": "apitok-5f2c9a1e7b",
    "ADMIN_TOKEN": "admtok-8d3b6c0f4a",
    "HOOK_SECRET": "hooksec-1e9a7c5b3d",
    "HTTP_PASSWORD": "httppw-6a4c2e0b8f",
    "RABBIT_PASSWORD": "rabbitpw-9c7e5a3b1d",
    "PG_PASSWORD": "pgpw-2b4d6f8a0c",
    "MARKED": "marked-7f1d3b5c9e",  # a plain name, marked secret by ${secret:MARKED}
}
LITERAL = "literal-4e2c0a8b6d"  # written in the file itself, under a secret-bearing key

CONFIG = """\
version: 1
store: sqlite:///{db}
server:
  api: {{token: "${{API_TOKEN}}"}}
  admin: {{token: "${{ADMIN_TOKEN}}"}}
defaults: {{retry: {{attempts: 1}}}}
events:
  db/*: {{schema: none}}
  note/*: {{schema: none}}
connectors:
  supa:
    type: webhook
    provider: supabase
    auth: {{secret: "${{HOOK_SECRET}}"}}
handlers:
  - id: app
    on: ["db/*", "note/*"]
    type: http
    url: "http://alice:${{HTTP_PASSWORD}}@127.0.0.1:{closed}/events"
    timeout: 2s
"""
RABBIT = """\
version: 1
store: sqlite:///{db}
events: {{job/*: {{schema: none}}}}
connectors:
  jobs:
    type: rabbitmq
    url: "amqp://guest:${{RABBIT_PASSWORD}}@127.0.0.1:5672/"
    consume: {{queue: bridge-secrets-test, event: {{type: job/run}}}}
handlers:
  - {{id: log, on: "job/*", type: log}}
"""
POSTGRES = """\
version: 1
store: "{scheme}://bridge:${{PG_PASSWORD}}@127.0.0.1:{closed}/bridge"
events: {{job/*: {{schema: none}}}}
handlers:
  - {{id: log, on: "job/*", type: log}}
"""
BROKEN = """\
version: 1
store: "sqlite:///${{PG_PASSWORD}}/x.db"
unrouted: "${{API_TOKEN}}"
server: {{listen: "${{ADMIN_TOKEN}}"}}
connectors:
  supa: {{type: webhook, provider: supabase, path: "/v1/${{HOOK_SECRET}}", auth: {{secret: x}}}}
  other: {{type: webhook, provider: supabase, path: "/v1/{literal}", auth: {{secret: {literal}}}}}
handlers:
  - {{id: h, on: "${{HTTP_PASSWORD}}", type: http, url: "ftp://u:${{RABBIT_PASSWORD}}@x/"}}
  - {{id: m, on: "job/*", type: log, timeout: "${{secret:MARKED}}"}}
"""

SUPABASE_INSERT = {
    "type": "INSERT",
    "table": "users",
    "schema": "public",
    "record": {"id": 1},
    "old_record": None,
}


def cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def leaks(text: str) -> list[str]:
    known = {**SECRETS, "LITERAL": LITERAL}
    return [name for name, value in known.items() if value in text]


@pytest.mark.e2e
async def test_no_output_of_a_run_holds_a_secret(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT), **SECRETS}
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "state.db", closed=free_port()))
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN.format(literal=LITERAL))
    # Independent commands run side by side (each spends seconds importing).
    outputs: dict[str, str] = dict(
        zip(
            ("validate", "validate broken"),
            await asyncio.gather(
                asyncio.to_thread(cli, "validate", "-c", str(config), env=env),
                asyncio.to_thread(cli, "validate", "-c", str(broken), env=env),
            ),
            strict=True,
        )
    )
    assert outputs["validate"].startswith("exit 0"), outputs["validate"]
    assert outputs["validate broken"].startswith("exit 1"), outputs["validate broken"]
    # The messages are there, with the secrets masked (and nothing else).
    assert "invalid duration '***'" in outputs["validate broken"], outputs["validate broken"]
    assert outputs["validate broken"].count("path '/v1/***'") == 2, outputs["validate broken"]

    bridge = BridgeProcess(config, tmp_path, env=SECRETS)
    bridge.start()
    answers: list[str] = []
    api = {"authorization": f"Bearer {SECRETS['API_TOKEN']}"}
    admin = {"authorization": f"Bearer {SECRETS['ADMIN_TOKEN']}"}
    try:
        await bridge.wait_ready()
        async with aiohttp.ClientSession() as session:

            async def call(method: str, path: str, **kw: object) -> tuple[int, str]:
                async with session.request(method, bridge.url + path, **kw) as resp:  # type: ignore[arg-type]
                    text = await resp.text()
                answers.append(f"{method} {path} {resp.status} {dict(resp.headers)} {text}")
                return resp.status, text

            hook = {"x-webhook-secret": SECRETS["HOOK_SECRET"]}
            assert (await call("POST", "/hooks/supa", json=SUPABASE_INSERT, headers=hook))[0] == 202
            wrong = {"x-webhook-secret": SECRETS["HOOK_SECRET"][:-1]}
            assert (await call("POST", "/hooks/supa", json=SUPABASE_INSERT, headers=wrong))[
                0
            ] == 401
            event = {"specversion": "1.0", "id": "n1", "type": "note/x", "source": "t", "data": {}}
            assert (await call("POST", "/v1/events", json=event, headers=api))[0] == 202
            bad = {"authorization": f"Bearer {SECRETS['API_TOKEN']}x"}
            assert (await call("POST", "/v1/events", json=event, headers=bad))[0] == 401
            # The admin token is refused on the event API, and the API token on admin paths.
            assert (await call("POST", "/v1/events", json=event, headers=admin))[0] == 401
            assert (await call("GET", "/v1/dead-letters", headers=api))[0] == 401
            # Both events fail in the HTTP handler (its app is down) and are dead-lettered.
            letters: list[dict[str, object]] = []
            for _ in range(300):
                status, text = await call("GET", "/v1/dead-letters", headers=admin)
                letters = orjson.loads(text)["items"] if status == 200 else []
                if len(letters) >= 2:
                    break
                await asyncio.sleep(0.1)
            assert len(letters) == 2, answers[-1]
            for letter in letters:
                await call("GET", f"/v1/dead-letters/{letter['id']}", headers=admin)
            for path in ("/healthz", "/readyz", "/metrics"):
                await call("GET", path)
        # A request aiohttp cannot parse, with the token in the offending header line.
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
        writer.write(
            b"GET /v1/dead-letters HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
            + SECRETS["ADMIN_TOKEN"].encode()
            + b"\x01\r\n\r\n"
        )
        await writer.drain()
        await reader.read()
        writer.close()
        outputs["dlq list"] = cli("dlq", "-c", str(config), "list", "--json", env=env)
        assert outputs["dlq list"].startswith("exit 0"), outputs["dlq list"]
        first = orjson.loads(outputs["dlq list"].splitlines()[1])["id"]
        outputs["dlq show"] = cli("dlq", "-c", str(config), "show", first, env=env)
    finally:
        await bridge.stop()
    outputs["log"] = bridge.log_path.read_text()
    outputs["answers"] = "\n".join(answers)
    assert "malformed HTTP request" in outputs["log"]
    assert "Cannot connect" in outputs["dlq show"] or "connect" in outputs["dlq show"].lower()

    # Runs that cannot start because of their credentials.
    rabbit = tmp_path / "rabbit.yaml"
    rabbit.write_text(RABBIT.format(db=tmp_path / "r.db"))
    failing = {"rabbitmq refused": rabbit}
    for scheme in ("postgresql", "postgres+asyncpg"):  # the store is down; a mistyped scheme
        postgres = tmp_path / f"postgres-{scheme}.yaml"
        postgres.write_text(POSTGRES.format(scheme=scheme, closed=free_port()))
        failing[f"store {scheme}"] = postgres
    ports = [free_port() for _ in failing]
    failed = await asyncio.gather(
        *(
            asyncio.to_thread(cli, "run", "-c", str(path), "--listen", f"127.0.0.1:{port}", env=env)
            for path, port in zip(failing.values(), ports, strict=True)
        )
    )
    outputs.update(zip(failing, failed, strict=True))
    assert outputs["rabbitmq refused"].startswith("exit 1"), outputs["rabbitmq refused"]
    for scheme in ("postgresql", "postgres+asyncpg"):
        out = outputs[f"store {scheme}"]
        assert out.startswith("exit 1"), out
        # The store is down (redacted URL in the error), or the scheme is refused by
        # validation, which names the scheme and never echoes the URL.
        assert "bridge:***@" in out or "PostgreSQL" in out or "store URL scheme" in out, out

    if os.environ.get("BRIDGE_TEST_SHOW_OUTPUTS"):
        Path(os.environ["BRIDGE_TEST_SHOW_OUTPUTS"]).write_text(orjson.dumps(outputs).decode())
    found = {name: leaks(text) for name, text in outputs.items() if leaks(text)}
    assert found == {}, {name: outputs[name][-3000:] for name in found}
