"""Retry policies: how many attempts, and how long to wait between them."""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.duration import Duration


class RetryPolicy(BaseModel):
    """Attempts and backoff of one handler's runs.

    The delay before attempt ``n + 1`` is ``min_delay * multiplier ** (n - 1)``
    (exponential) or ``min_delay`` (fixed), capped at ``max_delay``, then reduced
    by up to ``jitter`` (a fraction) at random so that retries spread out.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(3, ge=1, le=1000, description="Total attempts, the first included.")
    backoff: Literal["exponential", "fixed"] = Field("exponential", description="Delay growth.")
    min_delay: Duration = Field(1.0, description="Delay before the first retry.")
    max_delay: Duration = Field(60.0, description="Longest delay between attempts.")
    multiplier: float = Field(2.0, ge=1.0, description="Growth factor for exponential backoff.")
    jitter: float = Field(
        0.2, ge=0.0, le=1.0, description="Fraction of the delay taken off at random."
    )

    @model_validator(mode="after")
    def _check(self) -> RetryPolicy:
        if self.max_delay < self.min_delay:
            raise ValueError("max_delay must not be below min_delay")
        return self

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if self.backoff == "fixed":
            base = self.min_delay
        else:
            base = self.min_delay * self.multiplier ** max(0, attempt - 1)
        base = min(base, self.max_delay)
        if self.jitter and base > 0:
            base *= 1.0 - self.jitter * (rng or random).random()
        return base
