"""Config models of flow control: a handler's rate limit and retry budget.

They live apart from ``bridge.flow`` (which enforces them) so that the handler
contract (``bridge.handling``) and the config file (``bridge.config``) can name
them without importing the flow machinery, which itself reads ``HandlerConfig``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bridge.duration import Duration


class RateLimit(BaseModel):
    """At most ``count`` attempts of a handler start in any window of ``per``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1, le=1_000_000, description="Attempts allowed per period.")
    per: Duration = Field(gt=0, description="The period, e.g. `1s`, `1m`.")


class RetryBudgetConfig(BaseModel):
    """Retries allowed as a share of first attempts; retries beyond it wait."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: float = Field(
        0.2, ge=0.0, le=100.0, description="Retries allowed per first attempt in the window."
    )
    window: Duration = Field(10.0, gt=0, description="The sliding window the counts cover.")
    min_per_second: float = Field(
        1.0,
        ge=0.0,
        description="Retries per second allowed even without first attempts (low traffic).",
    )
