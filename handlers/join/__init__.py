"""``type: join``: the handler (``handler``) and its background sweeper (``sweeper``)."""

from __future__ import annotations

from handlers.join.handler import JoinHandler, JoinHandlerConfig, build, join_id
from handlers.join.sweeper import JoinOwner, JoinSweeper, background

__all__ = [
    "JoinHandler",
    "JoinHandlerConfig",
    "JoinOwner",
    "JoinSweeper",
    "background",
    "build",
    "join_id",
]
