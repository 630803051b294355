"""Durable steps: a step's result is recorded once, so a retried run skips the steps it did."""

from __future__ import annotations

from typing import Any, Protocol


class Steps(Protocol):
    """Step results by (event id, handler, step name)."""

    async def step_get(self, event_id: str, handler: str, step: str) -> tuple[bool, Any]:
        """(True, result) if the step was recorded, else (False, None)."""

    async def step_put(self, event_id: str, handler: str, step: str, result: Any) -> None:
        """Record a step's result; the first record wins. Durable on return."""
