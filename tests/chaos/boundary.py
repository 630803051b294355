"""Handler behaviours for the property test of the run boundary (test_run_boundary.py).

A message carries the id of a plan; the plan says, per handler and per attempt, what the
handler does: return a value (storable or not), emit a child (storable or not), raise an
exception (``Exception``, ``Fatal``, ``RetryAfter``, or a ``BaseException`` such as
``KeyboardInterrupt`` / ``SystemExit``), or sleep past its timeout (the sync handler
blocks its thread with ``time.sleep``). ``expected`` says how the branch must end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from bridge import Context, Event, Fatal, RetryAfter

TIMEOUT = 0.25
ATTEMPTS = 3
MAX_DELAY = 0.05
HANDLERS = ("a1", "a2", "s1")  # s1 is a sync function: it runs (and blocks) in a thread


@dataclass(frozen=True)
class Act:
    """What a handler does in one attempt."""

    kind: str  # return | emit | raise | sleep
    value: Any = None
    storable: bool = True
    raises: str = ""


@dataclass
class Plan:
    """Per handler, what each attempt does (the last act repeats)."""

    acts: dict[str, list[Act]]
    event_id: str = ""
    event_source: str = ""
    calls: Counter[str] = field(default_factory=Counter)


PLANS: dict[str, Plan] = {}
_sync_active = 0
_sync_lock = threading.Lock()


def sync_active() -> int:
    """Sync handler calls still running (a timed-out one keeps its thread until it returns)."""
    return _sync_active


class Weird(BaseException):
    """A BaseException that is neither cancellation nor an interrupt."""


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken too")


class BadDetail(Fatal):
    def __init__(self) -> None:
        super().__init__("with a detail the store cannot write")
        self.detail = {1: {Decimal(1), b"x"}}


RAISES: dict[str, Any] = {
    "ValueError": lambda: ValueError("bad value"),
    "KeyError": lambda: KeyError("id"),
    "BadStr": BadStr,
    "RetryAfter": lambda: RetryAfter("slow down", delay=MAX_DELAY),
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": lambda: SystemExit(2),
    "GeneratorExit": GeneratorExit,
    "Weird": Weird,
    "Fatal": lambda: Fatal("do not retry"),
    "BadDetail": BadDetail,
}
FATAL = {"Fatal", "BadDetail"}


def expected(acts: list[Act]) -> tuple[str, int, str]:
    """How a branch with these acts ends: status, attempts made, reason prefix (dead)."""
    for number in range(1, ATTEMPTS + 1):
        act = acts[min(number - 1, len(acts) - 1)]
        if act.kind == "return":
            if act.storable:
                return "succeeded", number, ""
            return "dead_lettered", number, "unserializable_result"
        if act.kind == "emit":
            if act.storable:
                return "succeeded", number, ""
            return "dead_lettered", number, "unserializable_child"
        if act.kind == "raise" and act.raises in FATAL:
            return "dead_lettered", number, ""
    return "dead_lettered", ATTEMPTS, ""


def _perform(plan: Plan, ctx: Context) -> tuple[Act, bool]:
    acts = plan.acts[ctx.handler_id]
    act = acts[min(ctx.attempt - 1, len(acts) - 1)]
    plan.calls[ctx.handler_id] += 1
    if act.kind == "raise":
        raise RAISES[act.raises]()
    if act.kind == "emit":
        ctx.emit("child/made", act.value)
    return act, act.kind == "sleep"


async def act(event: Event[Any], ctx: Context) -> Any:
    """The async handler: does what its plan says for this attempt."""
    plan = PLANS[event.data["plan"]]
    plan.event_id, plan.event_source = event.id, event.source
    step, sleeps = _perform(plan, ctx)
    if sleeps:
        await asyncio.sleep(TIMEOUT * 2)
    return step.value if step.kind == "return" else None


def act_sync(event: Event[Any], ctx: Context) -> Any:
    """The sync handler: the same, blocking its thread when it sleeps."""
    global _sync_active
    with _sync_lock:
        _sync_active += 1
    try:
        plan = PLANS[event.data["plan"]]
        plan.event_id, plan.event_source = event.id, event.source
        step, sleeps = _perform(plan, ctx)
        if sleeps:
            time.sleep(TIMEOUT + 0.1)
        return step.value if step.kind == "return" else None
    finally:
        with _sync_lock:
            _sync_active -= 1


# ---------------------------------------------------------------- strategies

# Wider than 64 bits too: JSON bounds no integer, and the ledger keeps them exact.
_ints = st.integers(min_value=-(2**80), max_value=2**80)
_json_leaf = st.none() | st.booleans() | _ints | st.floats() | st.text(max_size=20)
plain_json = st.recursive(
    _json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
# What the ledger writes as its str (orjson default=str): still storable results.
_as_str = (
    st.decimals(allow_nan=False)
    | st.sets(st.integers(), max_size=3)
    | st.binary(max_size=8)
    | st.just(datetime(2026, 1, 1, tzinfo=UTC))
    | st.tuples(_ints, st.text(max_size=4))
)
storable_result = st.recursive(
    _json_leaf | _as_str,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
_poison = (
    st.dictionaries(st.integers(), st.text(max_size=4), min_size=1, max_size=2)
    | st.just("lone \ud800 surrogate")
    | st.dictionaries(st.tuples(st.integers()), st.none(), min_size=1, max_size=1)
)
_child_poison = _poison | st.decimals(allow_nan=False) | st.sets(st.integers(), min_size=1)


def _embed(poison: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A storable container with one poison value somewhere inside."""
    return st.recursive(
        poison,
        lambda kid: (
            st.builds(lambda k, xs: [*xs, k], kid, st.lists(plain_json, max_size=2))
            | st.builds(lambda k, name: {name: k}, kid, st.text(max_size=6))
        ),
        max_leaves=4,
    )


acts = st.one_of(
    st.builds(Act, st.just("return"), storable_result, st.just(True)),
    st.builds(Act, st.just("return"), _embed(_poison), st.just(False)),
    st.builds(Act, st.just("emit"), plain_json, st.just(True)),
    st.builds(Act, st.just("emit"), _embed(_child_poison), st.just(False)),
    st.builds(Act, st.just("raise"), raises=st.sampled_from(sorted(RAISES))),
    st.just(Act("sleep")),
)
plans = st.fixed_dictionaries(
    {h: st.lists(acts, min_size=1, max_size=ATTEMPTS + 1) for h in HANDLERS}
)
