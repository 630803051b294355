"""The handler contract: a config model per kind and an object with ``invoke``.

A handler kind is one module with its pydantic config model (``type:
Literal[...]``, subclass of ``HandlerConfig``) and a class built from it. The
runtime builds each handler once with ``HandlerKind.build(cfg, env)``.

``invoke(event, ctx)`` returns a result (kept in the ledger) or raises:
``bridge.errors.Fatal`` dead-letters the run at once; anything else is retried
by the handler's policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Protocol, runtime_checkable

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
)

from bridge.cancellation import CancelOn
from bridge.duration import Duration
from bridge.limits import (
    BatchConfig,
    Debounce,
    Idempotency,
    Priority,
    RateLimit,
    RetryBudgetConfig,
    Singleton,
    Throttle,
)
from bridge.retry import RetryPolicy
from bridge.templates import EVENT_ROOTS, Template

if TYPE_CHECKING:
    from bridge.context import Context
    from bridge.events import Event, EventCatalog
    from bridge.transport import Background, Publisher


DEFAULT_IDEMPOTENCY_KEY = "{source}\x1f{id}"
"""The default ledger key: an event's ``source`` and ``id``, which together identify it."""


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


EventTypes = Annotated[
    list[str],
    BeforeValidator(_one_or_many),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}},
            ],
            "examples": ["order/placed", ["db/*", "order/paid"]],
        },
        mode="validation",
    ),
]
"""Event types or globs: one string, or a list of them (read as a list)."""


class DeadLetterTarget(BaseModel):
    """Where a dead-lettered run is also published, besides the store."""

    model_config = ConfigDict(extra="forbid")

    connector: str = Field(description="Name of a connector that can publish.")
    destination: str = Field(
        description="Topic, queue URL or exchange/routing-key of that connector."
    )


class HandlerConfig(BaseModel):
    """Fields every handler kind shares."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        description="Unique handler id; names its runs, ledger entries and dead letters."
    )
    type: str = Field(description="The handler kind.")
    on: EventTypes = Field(
        description="Event type or glob (`db/*`), or a list of them, this handler subscribes to."
    )
    filter: str | None = Field(
        None,
        description="CEL expression over `event`; the handler runs only when it is true.",
        examples=["event.data.source != 'test'", "event.data.total > 100"],
    )
    retry: RetryPolicy | None = Field(
        None, description="Retry policy; default from `defaults.retry`."
    )
    timeout: Duration | None = Field(
        None, description="Per-attempt timeout; default from `defaults`."
    )
    concurrency: int | None = Field(None, ge=1, description="Most runs of this handler at once.")
    concurrency_key: str | None = Field(
        None,
        description="Template of a key over the event, e.g. `{data.user_id}`: at most "
        "`concurrency_per_key` runs (attempts and backoffs included) per key at once, FIFO.",
    )
    concurrency_per_key: int = Field(
        1, ge=1, description="Most runs at once per `concurrency_key` value."
    )
    rate_limit: RateLimit | None = Field(
        None,
        description="At most `count` per `per` (any window), across replicas on PostgreSQL. "
        "`mode: wait` (default): attempts over it wait their turn. `mode: skip`: runs over "
        "it are skipped, recorded and counted.",
    )
    throttle: Throttle | None = Field(
        None,
        description="GCRA limit on run starts per key; runs over it wait in order, never "
        "dropped. See docs/flow-control.md.",
    )
    debounce: Debounce | None = Field(
        None,
        description="Run once per key with the last event, after `period` without a new one; "
        "superseded events are recorded as `debounced`.",
    )
    singleton: Singleton | None = Field(
        None, description="At most one run per key at a time: `skip` the new or `cancel` the old."
    )
    priority: Priority | None = Field(
        None, description="When the handler's `concurrency` slots are contended, higher first."
    )
    idempotency: Idempotency | None = Field(
        None, description="At most one run per key per `ttl`, whatever the event id."
    )
    retry_budget: str | RetryBudgetConfig | None = Field(
        None,
        description="Name of a shared budget in `retry_budgets`, or an inline budget: "
        "retries beyond it are delayed, not dropped.",
    )
    idempotency_key: str = Field(
        DEFAULT_IDEMPOTENCY_KEY,
        description="Template of the ledger key; a redelivered event with the same key "
        "does not run a handler that already succeeded. The default is the event's "
        "identity as CloudEvents defines it: its `source` and `id` (joined by the "
        "unit separator, U+001F).",
    )
    dead_letter: DeadLetterTarget | None = Field(
        None, description="Also publish dead letters here."
    )
    batch: BatchConfig | None = Field(
        None,
        description="Hand the handler a list of events (python: the function gets a list; "
        "http: one POST of a CloudEvents JSON batch), fired at `max_size` events or at "
        "`timeout`. Ledger and dead letters stay per event.",
    )
    cancel_on: list[CancelOn] = Field(
        default_factory=list,
        description="Events that cancel this handler's runs for the same key: runs created "
        "before such an event and not started yet (pending, parked, sleeping, waiting) end "
        "`cancelled`. The bridge subscribes a companion, `<id>/cancel`, to them.",
    )

    @field_validator("concurrency_key")
    @classmethod
    def _key_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            Template(value, EVENT_ROOTS)  # a TemplateError is a ValueError
        return value

    @field_validator("retry_budget", mode="wrap")
    @classmethod
    def _budget_name_or_inline(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # Validated by hand so a mistake in an inline budget is reported once, at its
        # own path, rather than once per member of the union.
        if isinstance(value, dict):
            return RetryBudgetConfig.model_validate(value)
        if value is None or isinstance(value, str | RetryBudgetConfig):
            return handler(value)
        raise ValueError(
            "name a budget of `retry_budgets`, or give {ratio, window, min_per_second}"
        )

    @field_validator("id")
    @classmethod
    def _id_chars(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError("a handler id is a non-empty word without spaces")
        return value

    def connector_refs(self) -> dict[str, str]:
        """Connector names this handler needs, keyed by the field that names them."""
        refs: dict[str, str] = {}
        if self.dead_letter is not None:
            refs["dead_letter.connector"] = self.dead_letter.connector
        return refs


@runtime_checkable
class Handler(Protocol):
    """A built handler.

    Optional attributes the runtime reads: ``companions`` (see ``Companion``),
    ``can_suspend`` (True when its runs may sleep or wait durably, ``bridge.waits``:
    the runtime then exports ``bridge_runs_suspended_total`` for it from the start) and
    ``reads_deadline`` (True when ``invoke`` reads ``bridge.deadlines.current_deadline()``
    before its first await: the attempt's timeout is then armed before the call; by
    default it is armed when the call first waits, and a call that never waits needs none).
    """

    async def invoke(self, event: Event[Any], ctx: Context) -> Any:
        """Handle one event; return a JSON-able result or raise."""


@dataclass(frozen=True, slots=True)
class Companion:
    """A handler that a built handler brings along, subscribed to ``on`` on its own.

    A handler lists them in a ``companions`` attribute; the runtime binds each like a
    configured handler of id ``id`` (no filter, the default retry and timeout). The
    python kind's wait collector is one (``bridge.waits``).
    """

    id: str
    on: tuple[str, ...]
    handler: Handler


def _wake_nobody() -> None:
    return None


@dataclass(slots=True)
class HandlerEnv:
    """What the runtime gives a handler kind when building it.

    Attributes:
        catalog: the event catalog.
        publishers: publishers by connector name (the handlers' ``connector_refs``).
        base_dir: the config file's directory.
        store: the state store (``bridge.store.contracts.Store``).
        wake: wakes the inbox's consumer; call it after putting events in the
            store's inbox directly (not through ``ctx.emit``).
    """

    catalog: EventCatalog
    publishers: Mapping[str, Publisher] = field(default_factory=dict)
    base_dir: str = "."
    store: Any = None
    wake: Callable[[], None] = _wake_nobody


@dataclass(frozen=True, slots=True)
class HandlerKind:
    """A handler kind: its config model, how to build it, and optional background work.

    ``background(handlers, env)``, when set, is called once with every built
    handler of this kind by id (when there is at least one) and the env they were
    built with. The runtime runs what it returns as a task once the store is open
    and cancels it when intake stops (the join handler's deadline sweeper).
    """

    config: type[HandlerConfig]
    build: Callable[[Any, HandlerEnv], Handler]
    background: Callable[[Mapping[str, Any], HandlerEnv], Background] | None = None


class Closable(Protocol):
    """A handler that holds resources (a connection pool) closes them here."""

    async def close(self) -> None: ...
