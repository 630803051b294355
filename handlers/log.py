"""``type: log``: write the event to the log. Useful while wiring a config."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import Field

from bridge.context import Context
from bridge.events import Event
from bridge.handling import HandlerConfig, HandlerEnv


class LogHandlerConfig(HandlerConfig):
    """Log each event (envelope, and data when ``data: true``)."""

    type: Literal["log"] = Field("log", description="Handler kind: log the event.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Level of the log line."
    )
    data: bool = Field(True, description="Include the event data in the line.")


class LogHandler:
    def __init__(self, cfg: LogHandlerConfig, env: HandlerEnv) -> None:
        self.level = logging.getLevelName(cfg.level)
        self.with_data = cfg.data
        self.logger = logging.getLogger(f"bridge.handler.{cfg.id}")

    async def invoke(self, event: Event[Any], ctx: Context) -> Any:
        extra = ctx.log_fields()
        if self.with_data:
            extra["data"] = event.data_json()
        self.logger.log(self.level, "event %s %s", event.type, event.id, extra=extra)
        return None


def build(cfg: LogHandlerConfig, env: HandlerEnv) -> LogHandler:
    return LogHandler(cfg, env)
