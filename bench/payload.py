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
