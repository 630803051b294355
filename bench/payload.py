"""The event every throughput benchmark sends, and the four no-op handlers it fans out to."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, Field


class SubscriberCreated(BaseModel):
    """The same shape as the newsletter example's event."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    name: str
    preferences: list[str] = Field(default_factory=list)
    source: str = "web"


def body(n: int) -> bytes:
    return orjson.dumps(
        {
            "email": f"user{n}@example.com",
            "name": f"User {n}",
            "preferences": ["python", "rust"],
            "source": "web",
        }
    )


async def noop_1(event: Any, ctx: Any) -> None:
    return None


async def noop_2(event: Any, ctx: Any) -> None:
    return None


async def noop_3(event: Any, ctx: Any) -> None:
    return None


async def noop_4(event: Any, ctx: Any) -> None:
    return None


HANDLERS = (noop_1, noop_2, noop_3, noop_4)


def bridge_config(
    connector: str,
    *,
    store: str,
    ledger: bool = True,
    module: str = "bench.payload",
    schema: str = "bench.payload:SubscriberCreated",
) -> str:
    """A bridge config shared by the throughput benchmarks: one connector ``signups`` (its YAML
    body, indented four spaces) and the four no-op handlers of ``module`` on ``subscriber/created``."""
    handlers = "".join(
        f'  - {{id: h{n}, on: subscriber/created, type: python, function: "{module}:noop_{n}"}}\n'
        for n in range(1, 5)
    )
    return (
        f"version: 1\nstore: {store}\nledger: {str(ledger).lower()}\n"
        "server: {enabled: false}\ntelemetry: {logs: {level: ERROR}}\n"
        f'events:\n  subscriber/created: {{schema: "{schema}"}}\n'
        f"connectors:\n  signups:\n{connector.rstrip()}\n"
        f"handlers:\n{handlers}"
    )
