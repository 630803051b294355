"""Config models of flow control: rate limit, retry budget, throttle, debounce, singleton,
priority and idempotency.

They live apart from ``bridge.flow`` (which enforces them) so that the handler
contract (``bridge.handling``) and the config file (``bridge.config``) can name
them without importing the flow machinery, which itself reads ``HandlerConfig``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.celexpr import cel
from bridge.duration import Duration
from bridge.routing import compile_filter


def _cel_key(value: str) -> str:
    """``value`` compiles as CEL (a key expression over ``event``)."""
    try:
        cel.compile(value)
    except Exception as exc:  # the CEL binding raises ValueError and RuntimeError
        raise ValueError(f"invalid CEL key expression {value!r}: {exc}") from exc
    return value


CelKey = Annotated[str, AfterValidator(_cel_key)]
"""A CEL expression over ``event`` whose value (as text) names a key."""


class RateLimit(BaseModel):
    """At most ``count`` attempts of a handler start in any window of ``per``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1, le=1_000_000, description="Attempts allowed per period.")
    per: Duration = Field(gt=0, description="The period, e.g. `1s`, `1m`.")
    mode: Literal["wait", "skip"] = Field(
        "wait",
        description="`wait`: an attempt over the limit waits for its turn. "
        "`skip`: a run over the limit is skipped, recorded and counted (Inngest's "
        "`rateLimit`); held across replicas on PostgreSQL.",
    )
    key: CelKey | None = Field(
        None,
        description="With `mode: skip`, a CEL expression over `event`: each value has its own "
        "limit.",
    )

    @model_validator(mode="after")
    def _key_needs_skip(self) -> RateLimit:
        if self.key is not None and self.mode != "skip":
            raise ValueError("a rate limit `key` needs `mode: skip`")
        return self


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


class Throttle(BaseModel):
    """GCRA: at most ``limit`` runs start per ``period`` per key, plus ``burst``; the rest wait.

    Excess runs are never dropped: each is given the next start time the key has,
    in arrival order, and waits for it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=1, le=1_000_000, description="Runs that may start per `period`.")
    period: Duration = Field(gt=0, description="The period, e.g. `1s`, `1m`.")
    burst: int = Field(
        0, ge=0, le=1_000_000, description="Runs that may start at once above the steady rate."
    )
    key: CelKey | None = Field(
        None,
        description="CEL expression over `event`; each value has its own limit. "
        "Default: one limit for the handler.",
        examples=["event.data.customer_id"],
    )


class Debounce(BaseModel):
    """Run once, with the last event, after ``period`` without a new event for the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period: Duration = Field(
        gt=0, description="Quiet time after the last event before the run starts."
    )
    key: CelKey | None = Field(
        None,
        description="CEL expression over `event`; each value is debounced on its own. "
        "Default: one for the handler.",
        examples=["event.data.user_id"],
    )
    timeout: Duration | None = Field(
        None,
        gt=0,
        description="The longest wait from a key's first event: the run then starts with "
        "the last event even if events keep coming.",
    )


class Singleton(BaseModel):
    """At most one run per key at a time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: CelKey | None = Field(
        None,
        description="CEL expression over `event`. Default: one run of the handler at a time.",
        examples=["event.data.account_id"],
    )
    mode: Literal["skip", "cancel"] = Field(
        "skip",
        description="`skip`: a new run while one runs is skipped (recorded, counted). "
        "`cancel`: the running one is cancelled (status `cancelled`) and the new one starts.",
    )


class Priority(BaseModel):
    """Which runs start first when the handler's slots are contended."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: CelKey = Field(
        description="CEL expression over `event` giving an integer; higher starts first. "
        "A value that is not an integer counts as 0.",
        examples=["event.data.plan == 'enterprise' ? 100 : 0"],
    )


class Idempotency(BaseModel):
    """At most one run per key per ``ttl``, whatever the event id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: CelKey = Field(
        description="CEL expression over `event`.", examples=["event.data.order_id"]
    )
    ttl: Duration = Field(
        86400.0, gt=0, description="How long a key, once run, keeps further runs away."
    )
