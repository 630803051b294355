"""What the developer UI's JSON API answers: run history pages, catalog examples, query checks.

Pure functions over store records; the aiohttp handlers in ``bridge.ui.api`` call them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from bridge.store.contracts import DeadLetter, EventRecord, RunRecord, Store

EVENT_STATUSES = ("running", "succeeded", "partial", "dead_lettered", "unrouted")
LETTER_STATUSES = ("pending", "replayed", "discarded")
MAX_PAGE = 200


class BadQuery(ValueError):
    """A query parameter or body the API cannot use; answered 400 with its message."""


def page_limit(raw: str | None, default: int = 50) -> int:
    """``limit`` as an int in 1..MAX_PAGE.

    Raises:
        BadQuery: not an integer, or out of range.
    """
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise BadQuery(f"limit must be an integer, not {raw!r}") from None
    if not 1 <= limit <= MAX_PAGE:
        raise BadQuery(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def encode_cursor(record: EventRecord) -> str:
    """The cursor after ``record``: its receive time and id (the list's sort key)."""
    return f"{record.received_at!r}:{record.id}"


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Inverse of ``encode_cursor``.

    Raises:
        BadQuery: not a cursor this API made.
    """
    stamp, sep, event_id = cursor.partition(":")
    try:
        when = float(stamp)
    except ValueError:
        when = math.nan
    if not sep or not math.isfinite(when):
        raise BadQuery("before must be a cursor from a previous page's 'next'")
    return when, event_id


async def events_page(
    store: Store,
    *,
    type: str | None,
    status: str | None,
    search: str | None,
    before: str | None,
    limit: int,
) -> tuple[list[EventRecord], str | None]:
    """One page of the history, newest first, and the cursor of the next page (None: last page).

    The store pages by receive time alone; events that share the cursor's time are
    told apart by id (the list's second sort key), so none is skipped or repeated.

    Raises:
        BadQuery: an unknown status or a malformed cursor.
    """
    if status is not None and status not in EVENT_STATUSES:
        raise BadQuery(f"status is one of {', '.join(EVENT_STATUSES)}")
    filters: dict[str, Any] = {"type": type, "status": status, "search": search}
    want = limit + 1
    if before is None:
        rows = await store.history_events(**filters, limit=want)
    else:
        when, last_id = decode_cursor(before)
        fetch = want + 16
        while True:
            # Up to and including the cursor's time, then drop what the previous page showed.
            found = await store.history_events(
                **filters, before=math.nextafter(when, math.inf), limit=fetch
            )
            rows = [r for r in found if not (r.received_at == when and r.id >= last_id)]
            if len(rows) >= want or len(found) < fetch:
                break
            fetch *= 4
    items = rows[:limit]
    more = len(rows) > limit
    return items, encode_cursor(items[-1]) if more and items else None


def event_summary(record: EventRecord) -> dict[str, Any]:
    """The list row of an event (no envelope)."""
    return {
        "id": record.id,
        "type": record.type,
        "status": record.status,
        "source": record.source,
        "correlation_id": record.correlation_id,
        "parent_id": record.parent_id,
        "trace_id": record.trace_id,
        "received_at": record.received_at,
        "finished_at": record.finished_at,
        "duration": (
            None
            if record.finished_at is None
            else max(record.finished_at - record.received_at, 0.0)
        ),
        "handlers": record.runs,
    }


def run_view(run: RunRecord, letter: DeadLetter | None) -> dict[str, Any]:
    """A run with its attempts, children and, when it is dead-lettered, its letter."""
    out = asdict(run)
    out["dead_letter"] = (
        None
        if letter is None
        else {"id": letter.id, "status": letter.status, "reason": letter.reason}
    )
    return out


def letter_view(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as the list shows it (the raw body left out)."""
    return {
        "id": letter.id,
        "status": letter.status,
        "reason": letter.reason,
        "handler": letter.handler,
        "connector": letter.connector,
        "event_id": letter.event_id,
        "event_type": letter.event_type,
        "correlation_id": letter.correlation_id,
        "trace_id": letter.trace_id,
        "created_at": letter.created_at,
        "attempts": [asdict(a) for a in letter.attempts],
        "replayable": letter.event is not None,
    }


async def dead_letters_filtered(
    store: Store,
    *,
    status: str | None,
    handler: str | None,
    type: str | None,
    limit: int,
    offset: int = 0,
    scan_limit: int = 10_000,
) -> list[DeadLetter]:
    """Dead letters newest first, filtered by status, handler and event type.

    Raises:
        BadQuery: an unknown status.
    """
    if status is not None and status not in LETTER_STATUSES:
        raise BadQuery(f"status is one of {', '.join(LETTER_STATUSES)}")
    return await store.dead_letters(
        status=status,  # type: ignore[arg-type]
        handler=handler,
        event_type=type,
        limit=limit,
        offset=offset,
    )


async def letters_of_event(
    store: Store, event_id: str, handlers: list[str]
) -> dict[str, DeadLetter]:
    """The newest dead letter of each of ``handlers`` for one event."""
    found: dict[str, DeadLetter] = {}
    for letter in await store.dead_letters(event_id=event_id, limit=200):
        if letter.handler in handlers and letter.handler not in found:
            found[letter.handler] = letter
    return found


def example_of(schema: Mapping[str, Any] | None, defs: Mapping[str, Any] | None = None) -> Any:
    """A small value that has the shape of a JSON Schema: what the send form starts with."""
    if not schema:
        return {}
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return example_of(defs.get(name), defs)
    if "default" in schema:
        return schema["default"]
    if schema.get("examples"):
        return schema["examples"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_of(schema[key][0], defs)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: example_of(sub, defs) for name, sub in props.items()}
    if kind == "array":
        return []
    if kind == "string":
        if "email" in str(schema.get("pattern", "")) or "@" in str(schema.get("pattern", "")):
            return "ada@example.com"
        return str(schema.get("title", "text")).lower()
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None
