"""The whole fan-out hierarchy of an event: its root, every descendant, their runs.

An event's children are the events its handlers emitted (``parent_id``), and
theirs in turn. The tree is read from the run history, from the root of the
hierarchy that holds the asked-for event, breadth first and bounded
(``MAX_NODES``, ``MAX_DEPTH``), so a runaway fan-out answers quickly and says it
was cut (``truncated``).

Each node carries an aggregate status: the worst status of its subtree
(``worst``), so a root whose grandchild was dead-lettered says so even though its
own runs succeeded. Statuses this module does not know (a flow control's
``throttled``, ``sleeping`` ...) rank as "still going": worse than done, better
than failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bridge.store.contracts import DeadLetter, EventRecord, RunRecord, Store
from bridge.ui.views import event_summary, run_view

MAX_NODES = 300
MAX_DEPTH = 12

# Higher is worse. Anything not listed (running, parked, throttled, sleeping ...) is WAITING.
_RANK = {
    "succeeded": 0,
    "skipped": 1,
    "unrouted": 1,
    "debounced": 1,
    "cancelled": 2,
    "partial": 4,
    "dead_lettered": 5,
}
WAITING = 3


def rank(status: str) -> int:
    """How bad a status is, for the aggregate (unknown statuses: still going)."""
    return _RANK.get(status, WAITING)


def worst(statuses: Iterable[str]) -> str | None:
    """The worst of ``statuses`` (None when there are none); between equals, the more
    telling one (``throttled`` says more than ``running``)."""
    return max(statuses, key=lambda s: (rank(s), s != "running"), default=None)


def in_config_order(runs: Sequence[RunRecord], order: Sequence[str]) -> list[RunRecord]:
    """Runs sorted as their handlers appear in the config; unknown handlers last, by name."""
    index = {handler: i for i, handler in enumerate(order)}
    return sorted(runs, key=lambda r: (index.get(r.handler, len(index)), r.handler))


async def subtree_statuses(
    store: Store, records: Sequence[EventRecord], max_nodes: int = 2000
) -> dict[str, str]:
    """For each of ``records`` with descendants, the worst status among them.

    Reads a level of all the trees at once (``history_children_of``), so a page of
    the list costs one query per level, not one per row; at most ``MAX_DEPTH``
    levels and about ``max_nodes`` descendants in all.
    """
    kids: dict[str, list[EventRecord]] = {}
    level = [r.id for r in records]
    seen = set(level)
    for _ in range(MAX_DEPTH):
        if not level or len(seen) > max_nodes:
            break
        following = []
        for kid in await store.history_children_of(level):
            kids.setdefault(kid.parent_id or "", []).append(kid)
            if kid.id not in seen:
                seen.add(kid.id)
                following.append(kid.id)
        level = following

    memo: dict[str, str | None] = {}

    def below(event_id: str, path: frozenset[str]) -> str | None:
        if event_id not in memo:
            statuses = []
            for kid in kids.get(event_id, []):
                if kid.id in path:  # a parent loop in the data: stop there
                    continue
                statuses += [kid.status, below(kid.id, path | {kid.id}) or kid.status]
            memo[event_id] = worst(statuses)
        return memo[event_id]

    found = {}
    for record in records:
        status = below(record.id, frozenset({record.id}))
        if status is not None:
            found[record.id] = status
    return found


async def find_root(store: Store, record: EventRecord) -> EventRecord:
    """The topmost ancestor of ``record`` still in the history (itself when it has none)."""
    seen = {record.id}
    current = record
    for _ in range(MAX_DEPTH * 4):
        parent_id = current.parent_id
        if not parent_id or parent_id in seen:
            break
        parent = await store.history_event(parent_id)
        if parent is None:
            break
        seen.add(parent.id)
        current = parent
    return current


async def fan_out_tree(
    store: Store,
    record: EventRecord,
    order: Sequence[str],
    letters: dict[str, dict[str, DeadLetter]] | None = None,
) -> dict[str, Any]:
    """The hierarchy that holds ``record``: ``{"root": node, "focus": id, "truncated", "nodes"}``.

    A node is the event's summary with ``runs`` (config order; each with ``children``,
    the ids it emitted), ``children`` (nodes) and ``aggregate`` (worst status of its
    subtree). ``letters`` (event id -> handler -> dead letter) adds dead letters to runs.
    """
    root = await find_root(store, record)
    letters = letters or {}
    nodes = 0
    truncated = False

    async def build(event: EventRecord, depth: int) -> dict[str, Any]:
        nonlocal nodes, truncated
        nodes += 1
        node = event_summary(event)
        runs = in_config_order(await store.history_runs(event.id), order)
        mine = letters.get(event.id, {})
        node["runs"] = [run_view(r, mine.get(r.handler)) for r in runs]
        node["children"] = []
        if depth < MAX_DEPTH:
            for child in await store.history_children(event.id):
                if nodes >= MAX_NODES:
                    truncated = True
                    break
                node["children"].append(await build(child, depth + 1))
        elif await store.history_children(event.id):
            truncated = True
        node["aggregate"] = worst(
            [event.status, *(r.status for r in runs), *(c["aggregate"] for c in node["children"])]
        )
        return node

    tree = await build(root, 0)
    return {"root": tree, "focus": record.id, "truncated": truncated, "nodes": nodes}
