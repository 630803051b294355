"""What the UI shows of a join (``type: join`` handlers): expected, arrived, missing, deadline.

A join is read from the store (``Store.join_get``). What is missing is worked out
here: with ``expect`` giving a list and ``member_key`` naming each member's item,
the missing items by name; otherwise how many are still expected. The handler's
config is read by field name (``expect``, ``member_key``), as the engine never
imports the join handler itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import bridge.jsonio as jsonio
from bridge.routing import compile_filter
from bridge.store.contracts import Join, RunRecord, Store

MAX_OPEN = 100  # open joins listed per handler


def join_ids(runs: Iterable[RunRecord]) -> list[str]:
    """Ids of the joins these runs opened or fed (a join handler's result names its join)."""
    found: list[str] = []
    for run in runs:
        result = run.result
        join = result.get("join") if isinstance(result, dict) else None
        if isinstance(join, str) and join not in found:
            found.append(join)
    return found


def _expected_items(cfg: Any, start: dict[str, Any]) -> list[Any] | None:
    expect = getattr(cfg, "expect", None)
    if not expect or not getattr(cfg, "member_key", None):
        return None
    try:
        value = compile_filter(expect).execute({"start": start})
    except Exception:  # an expression that fails here failed for the handler too
        return None
    return list(value) if isinstance(value, list | tuple) else None


def join_view(join: Join, cfg: Any, now: float | None = None) -> dict[str, Any]:
    """A join as the UI shows it.

    Args:
        join: the join, with its members.
        cfg: its handler's config (``expect``, ``member_key`` read if present), or None.
        now: the time its deadline is measured against (default: now).
    """
    members = list(join.members.values())
    needed = 1 if join.expected is None else join.expected
    items = _expected_items(cfg, join.start) if cfg is not None else None
    missing: list[Any] | int
    if items is not None:
        got = {jsonio.dumps(m.get("key")) for m in members if isinstance(m, dict)}
        missing = [item for item in items if jsonio.dumps(item) not in got]
    else:
        missing = max(needed - len(members), 0)
    start = join.start
    return {
        "id": join.id,
        "handler": join.handler,
        "status": join.status,
        "start": {"id": start.get("id"), "type": start.get("type")},
        "expected": join.expected,
        "expected_items": items,
        "arrived": [
            {"id": m.get("id"), "type": m.get("type"), "key": m.get("key")}
            for m in members
            if isinstance(m, dict)
        ],
        "missing": missing,
        "deadline": join.deadline,
        "overdue": join.status == "open" and join.deadline < (now or time.time()),
        "created_at": join.created_at,
    }


async def joins_of(store: Store, ids: Iterable[str], configs: Mapping[str, Any]) -> list[Any]:
    """The views of the joins with these ids that the store still holds."""
    views = []
    for join_id in ids:
        join = await store.join_get(join_id)
        if join is not None:
            views.append(join_view(join, configs.get(join.handler)))
    return views


async def open_joins(store: Store, configs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every open join of every join handler, soonest deadline first."""
    views = []
    for handler, cfg in configs.items():
        listed = await store.join_open_list(handler)
        listed.sort(key=lambda j: j.deadline)
        views.extend(await joins_of(store, [j.id for j in listed[:MAX_OPEN]], {handler: cfg}))
    views.sort(key=lambda v: v["deadline"])
    return views
