"""Fuzz target: the config loader (``bridge.app.load_config_text``, cross checks on).

Inputs: a complete, valid config (memory and webhook connectors, CEL filters,
templates, retries, durations, secrets from ``${VAR}``) with values replaced by
values of any type, keys removed or added, secret references moved anywhere,
the YAML text truncated, corrupted or made invalid UTF-8, plus YAML's own traps
(alias cycles, alias bombs, complex keys, tags, tabs, deep nesting). The loader
returns a config or raises ``ConfigError`` whose issues each have a message (and
a line where there is one); nothing else escapes, and no error text holds a
secret's value.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bridge.app import load_config_text
from bridge.config import BridgeConfig
from bridge.errors import ConfigError
from tests.chaos.fuzz_inputs import (
    FUZZ_TIMEOUT,
    Tally,
    break_bytes,
    fuzz_settings,
    json_values,
    mutated,
    sized,
)

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(FUZZ_TIMEOUT)]

ENV = {
    "API_TOKEN": "tok-9f8e7d6c5b4a",
    "HOOK_SECRET": "hook-1a2b3c4d5e6f",
    "PG_PASSWORD": "pgpw-0a9b8c7d6e",
    "PLAIN": "plain",
}
SECRETS = [v for k, v in ENV.items() if k != "PLAIN"]

BASE: dict[str, Any] = {
    "version": 1,
    "store": "memory://",
    "server": {
        "listen": "127.0.0.1:8787",
        "api": {"token": "${API_TOKEN}"},
        "admin": {"token": "${API_TOKEN}", "local_only": True},
        "body_timeout": "5s",
    },
    "unrouted": "dead_letter",
    "drain_timeout": "10s",
    "defaults": {"retry": {"attempts": 3, "backoff": "exponential", "min_delay": "100ms"}},
    "events": {"order/created": {"schema": "none"}, "db/*": {"schema": "none"}},
    "connectors": {
        "orders": {
            "type": "memory",
            "consume": {
                "max_in_flight": 10,
                "event": {"type": "order/created", "correlation_id": ["header:x-correlation-id"]},
            },
        },
        "hook": {
            "type": "webhook",
            "provider": "supabase",
            "path": "/hooks/supa",
            "auth": {"header": "x-webhook-secret", "secret": "${HOOK_SECRET}"},
            "event": {"type": "db/{data.table}.{data.op}"},
        },
    },
    "handlers": [
        {"id": "ship", "on": "order/created", "type": "log"},
        {
            "id": "bill",
            "on": ["order/*", "db/*"],
            "type": "log",
            "filter": "event.data.total > 10",
            "retry": {"attempts": 5, "min_delay": "100ms", "max_delay": "2s"},
            "timeout": "1m",
            "idempotency_key": "{data.id}",
        },
    ],
}
STORES = [
    "memory://",
    "postgresql://bridge:${PG_PASSWORD}@db:5432/bridge",
    "sqlite:///${PLAIN}/x.db",
    "${UNSET_VAR}",
    "${file:/nonexistent/secret}",
    "$${literal}",
    "${bad name}",
    "${PLAIN:-default}",
]
YAML_TRAPS = [
    "a: &a [*a]\n",
    "version: 1\nevents: &e {x: *e}\n",
    "? [a]\n: 1\n",
    "version: 1\n\tstore: x\n",
    "version: !!python/object:os.system x\n",
    "version: 1\nversion: 1\n",
    "x: " + "[" * 600 + "]" * 600 + "\n",  # past the recursion limit (PyYAML is slow here)
    "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(6)
    ),
    "--- 1\n--- 2\n",
    "",
    "null\n",
    "version: 1\nhandlers: {}\n",
    "%YAML 1.1\n---\nversion: 1\n",
    "version: 0o17\n",
    "version: 1\nstore: !!binary aGVsbG8=\n",
]


@st.composite
def secret_moved(draw: st.DrawFn, docs: st.SearchStrategy[Any]) -> Any:
    """A document from ``docs`` with a secret reference (or an odd ``${...}``) put at a random leaf."""
    doc = orjson.loads(orjson.dumps(draw(docs)))
    leaves: list[tuple[Any, Any]] = []
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for key, value in items:
            if isinstance(value, dict | list):
                stack.append(value)
            else:
                leaves.append((node, key))
    if leaves:
        node, key = leaves[draw(st.integers(0, len(leaves) - 1))]
        node[key] = draw(
            st.sampled_from(
                ["${API_TOKEN}", "${HOOK_SECRET}", "x-${PG_PASSWORD}-y", "${PLAIN}", *STORES]
            )
        )
    return doc


documents = st.one_of(
    st.just(BASE),
    mutated(st.just(BASE)),
    secret_moved(mutated(st.just(BASE))),
    secret_moved(st.just(BASE)),
    st.builds(lambda store: {**BASE, "store": store}, st.sampled_from(STORES)),
    json_values(),
)


def _as_yaml(doc: Any, style: str) -> str:
    if style == "json":
        return orjson.dumps(doc).decode()
    return yaml.dump(doc, Dumper=_DUMPER, default_flow_style=style == "flow", allow_unicode=True)


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's, when there: faster


@st.composite
def config_texts(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(YAML_TRAPS))
    text = _as_yaml(draw(documents), draw(st.sampled_from(["block", "flow", "json"])))
    if draw(st.integers(0, 3)) == 0:
        raw = break_bytes(draw, text.encode())
        text = raw.decode("utf-8", "replace") if draw(st.booleans()) else raw.decode("latin-1")
    return text


def test_fuzz_config() -> None:
    # Plugin discovery (~25 ms) is done once per process by bridge.app.default_kinds.
    tally = Tally("fuzz_config")

    @fuzz_settings(sized(80))  # a load parses YAML in pure Python: ~15 ms each
    @given(text=config_texts())
    def check(text: str) -> None:
        try:
            cfg = load_config_text(text, ENV)
        except ConfigError as exc:
            failure = exc
        else:
            assert isinstance(cfg, BridgeConfig)
            tally.count("loaded")
            return
        message = str(failure)
        assert failure.issues and all(i.message for i in failure.issues), message
        assert all(i.line is None or i.line >= 1 for i in failure.issues)
        for secret in SECRETS:
            assert secret not in message, (secret, message)
        first = failure.issues[0].message
        tally.count(
            "error: " + (first.split(":")[0] if first.startswith("invalid YAML") else "config")
        )

    try:
        check()
    finally:
        tally.write()
    assert tally.outcomes["loaded"] > 0
    assert tally.outcomes["error: config"] > 0 and tally.outcomes["error: invalid YAML"] > 0
