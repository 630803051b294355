"""Config models of flow control: a handler's rate limit and retry budget.

They live apart from ``bridge.flow`` (which enforces them) so that the handler
contract (``bridge.handling``) and the config file (``bridge.config``) can name
them without importing the flow machinery, which itself reads ``HandlerConfig``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.duration import Duration
from bridge.routing import compile_filter


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


class BatchConfig(BaseModel):
    """Hand the handler a list of events at once."""

    model_config = ConfigDict(extra="forbid")

    max_size: int = Field(ge=1, le=10_000, description="Most events in one batch; it fires full.")
    timeout: Duration = Field(
        description="A batch fires this long after its first event came, full or not."
    )
    key: str | None = Field(
        None,
        description="CEL over `event`: events with the same value are batched together "
        "(default: one batch at a time for the handler).",
        examples=["event.data.account_id"],
    )

    @field_validator("key")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            compile_filter(value)
        return value
