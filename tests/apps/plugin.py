"""A third-party handler kind, loaded through the `bridge.handlers` entry-point group in tests."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from bridge import Context, Event
from bridge.handling import HandlerConfig, HandlerEnv, HandlerKind

CALLS: list[str] = []


class ShoutConfig(HandlerConfig):
    """Shout the event type."""

    type: Literal["shout"] = "shout"
    volume: int = Field(11, ge=1, le=11, description="How loud.")


class Shout:
    def __init__(self, cfg: ShoutConfig, env: HandlerEnv) -> None:
        self.volume = cfg.volume

    async def invoke(self, event: Event[Any], ctx: Context) -> str:
        CALLS.append(event.type.upper() + "!" * self.volume)
        return CALLS[-1]


KIND = HandlerKind(ShoutConfig, lambda cfg, env: Shout(cfg, env))
