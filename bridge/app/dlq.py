"""``bridge dlq``: list, show, replay or discard dead letters, straight from the store.

Times are ISO 8601 in UTC (``2026-12-03T13:22:01.250Z``) in the table and in the JSON
of ``list --json`` and ``show``; the store keeps them as Unix seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge.app.config import load_config
from bridge.config import BridgeConfig

if TYPE_CHECKING:
    from bridge.deadletters import KeyOf
    from bridge.store.contracts import DeadLetter

# The table of `dlq list`: (header, width) per column; the last one takes the rest.
_COLUMNS = (("ID", 32), ("CREATED", 24), ("STATUS", 9), ("HANDLER", 24), ("EVENT TYPE", 24))


def iso_time(seconds: float) -> str:
    """Unix seconds as ISO 8601 in UTC, to the millisecond: ``2026-12-03T13:22:01.250Z``."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def readable(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as the command prints it: its fields, with times in ISO 8601."""
    out = letter.to_dict()
    out["created_at"] = iso_time(letter.created_at)
    for attempt in out["attempts"]:
        attempt["started_at"] = iso_time(attempt["started_at"])
    return out


def _row(*cells: str) -> str:
    fixed = "  ".join(f"{c:<{w}}" for c, (_, w) in zip(cells, _COLUMNS, strict=False))
    return f"{fixed}  {cells[-1]}".rstrip()


def _table(letters: list[DeadLetter]) -> None:
    print(_row(*(h for h, _ in _COLUMNS), "REASON"))
    for d in letters:
        cells = (d.id, iso_time(d.created_at), d.status, d.handler or "-", d.event_type or "-")
        print(_row(*cells, d.reason[:80]))


class _NotRun:
    """The handler of a ``BoundHandler`` built only for its ledger key."""

    async def invoke(self, event: Any, ctx: Any) -> Any:
        raise RuntimeError("bridge dlq never runs a handler")


def _ledger_keys(cfg: BridgeConfig) -> KeyOf:
    """The ledger key each configured handler gives an event, computed as the running
    bridge computes it, so that ``dlq replay`` refuses a replay that would run nothing."""
    from bridge.deadletters import handler_keys
    from bridge.dispatch.runs import BoundHandler
    from bridge.templates import EVENT_ROOTS, Template, TemplateError

    bound = {}
    for hc in cfg.handlers:
        try:
            template = Template(hc.idempotency_key, EVENT_ROOTS)
        except TemplateError:  # `bridge validate` reports it; the dispatcher checks then
            continue
        retry = hc.retry or cfg.defaults.retry
        bound[hc.id] = BoundHandler(hc.id, _NotRun(), retry, 0.0, template)
    return handler_keys(bound)


async def dlq_command(args: argparse.Namespace) -> int:
    """Run ``bridge dlq ACTION``; returns the exit code (1 for an unknown letter or handler).

    Raises:
        BridgeError: the store cannot be opened, or the replay is refused.
    """
    from bridge.deadletters import discard, replay
    from bridge.store import create_store

    cfg = load_config(args.config, check=False)
    store = create_store(args.store or cfg.store)
    await store.open()
    try:
        if args.action == "list":
            letters = await store.dead_letters(
                status=args.status, handler=args.handler, limit=args.limit
            )
            if args.json:
                for d in letters:
                    print(json.dumps(readable(d), default=str))
            elif letters:
                _table(letters)
            else:
                print("no dead letters")
            return 0
        if args.action == "show":
            letter = await store.dead_letter_get(args.id)
            if letter is None:
                print(f"error: no dead letter {args.id!r}", file=sys.stderr)
                return 1
            print(json.dumps(readable(letter), indent=2, default=str))
            # stdout stays one JSON document; the tracebacks, readable, go to stderr.
            for attempt in letter.attempts:
                if attempt.traceback:
                    print(f"\nattempt {attempt.number} traceback:", file=sys.stderr)
                    print(attempt.traceback.rstrip(), file=sys.stderr)
            return 0
        if args.action == "replay":
            if args.handler and args.handler not in {h.id for h in cfg.handlers}:
                print(f"error: no handler {args.handler!r} in {args.config}", file=sys.stderr)
                return 1
            entry = await replay(
                store, args.id, args.handler, force=args.force, key_of=_ledger_keys(cfg)
            )
            print(
                f"replayed {args.id} to {entry.handler or 'its subscribers'} (inbox entry {entry.id})"
            )
            return 0
        if args.action == "discard":
            await discard(store, args.id)
            print(f"discarded {args.id}")
            return 0
    finally:
        await store.close()
    return 2
