"""Dead-letter operations shared by the CLI and the HTTP API: replay and discard.

A replay is refused, and the letter left as it is, when it has nothing to run:
the handler already succeeded for the event (its ledger says so), so the
dispatcher would skip it. Replaying a discarded letter takes ``force``.

A letter is marked ``replayed`` when its replay is queued. If, by the time the
bridge takes the replay from the inbox, the handler has succeeded after all (a
race the check above cannot close: another replay of the same ledger key ran
first), nothing runs and the dispatcher puts the letter back to ``pending``
(``replay_ran_nothing``), unless the success is this letter's own event run
again since the letter was filed (the same letter replayed twice, or a replay
that ran before a crash): then ``replayed`` is true.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import bridge.jsonio as jsonio
from bridge.errors import BridgeError, InvalidEvent
from bridge.events import event_from_dict
from bridge.store.contracts import DeadLetter, InboxEntry, Store

log = logging.getLogger("bridge.deadletters")

_ENTRY_PREFIX = "replay-"

KeyOf = Callable[[str, dict[str, Any]], "str | None"]
"""The ledger key a handler (by id) gives an event (a CloudEvent mapping); None if unknown."""


class ReplayError(BridgeError):
    """A dead letter cannot be replayed or discarded.

    ``status`` is the HTTP status that answers it: 404 for an unknown letter,
    409 for a letter that cannot be replayed as it is, 400 for a bad request.
    """

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def handler_keys(handlers: Mapping[str, object]) -> KeyOf:
    """``key_of`` from a running bridge's handlers by id (each with ``key(event)``), so a
    replay is checked against the very key the dispatcher will look up."""

    def key_of(handler_id: str, event: dict[str, Any]) -> str | None:
        keyer = getattr(handlers.get(handler_id), "key", None)
        if not callable(keyer):
            return None
        try:
            return str(keyer(event_from_dict(event)))
        except InvalidEvent:
            return None

    return key_of


def force_flag(value: object) -> bool:
    """A ``force`` flag from a query string or JSON body: absent, true or false.

    Raises:
        ReplayError: (400) anything else.
    """
    if value is None or value is False or value in ("", "0", "false"):
        return False
    if value is True or value in ("1", "true"):
        return True
    raise ReplayError("force must be true or false", 400)


def replay_entry_id(letter_id: str) -> str:
    """A fresh inbox entry id for a replay of ``letter_id`` (each replay is a new entry)."""
    return f"{_ENTRY_PREFIX}{letter_id}-{uuid.uuid4().hex[:12]}"


def replayed_letter_id(entry_id: str) -> str | None:
    """The dead letter an inbox entry replays, from its id; None for any other entry."""
    if not entry_id.startswith(_ENTRY_PREFIX):
        return None
    letter_id, _, suffix = entry_id[len(_ENTRY_PREFIX) :].rpartition("-")
    return letter_id if letter_id and len(suffix) == 12 else None


async def replay(
    store: Store,
    letter_id: str,
    handler: str | None = None,
    *,
    force: bool = False,
    key_of: KeyOf | None = None,
) -> InboxEntry:
    """Put a dead letter's event back into the inbox for one handler.

    The handler is the one that failed unless ``handler`` names another; a
    letter that no handler took (unrouted) is routed again as usual. The running
    bridge picks the entry up from the inbox. The letter is then ``replayed``.

    Args:
        store: holds the letter, the ledger and the inbox.
        letter_id: the dead letter.
        handler: replay to this handler instead of the one that failed.
        force: replay a discarded letter too.
        key_of: the ledger key of the target handler for the event, when the
            letter does not carry it (a letter filed before it did, or another
            handler); without it such a replay is not checked against the ledger
            here, only by the dispatcher.

    Raises:
        ReplayError: the letter does not exist, holds no event, was discarded
            (without ``force``), or has nothing to run (the handler already
            succeeded for this event); the letter is then left unchanged.
    """
    letter = await store.dead_letter_get(letter_id)
    if letter is None:
        raise ReplayError(f"no dead letter {letter_id!r}", 404)
    if letter.event is None:
        raise ReplayError(
            f"dead letter {letter_id} holds a message that never became an event ({letter.reason});"
            " fix it at its source and send it again"
        )
    if letter.status == "discarded" and not force:
        raise ReplayError(
            f"dead letter {letter_id} was discarded; replay it with --force (HTTP: force=true)"
            " to run it anyway"
        )
    target = handler or letter.handler
    if target is not None:
        key = _key(letter, target, key_of)
        if key is not None:
            done = (await store.ledger_get([(target, key)])).get((target, key))
            if done is not None and done.status == "succeeded":
                raise ReplayError(
                    f"nothing to replay: handler {target!r} already succeeded for event"
                    f" {letter.event_id!r} (idempotency key {key!r}), so it would not run;"
                    f" dead letter {letter_id} stays {letter.status}"
                )
    entry = InboxEntry(
        id=replay_entry_id(letter.id),
        body=jsonio.dumps(letter.event),
        source="replay",
        handler=target,
    )
    await store.inbox_put([entry])
    await store.dead_letter_set_status(letter.id, "replayed")
    return entry


def _key(letter: DeadLetter, target: str, key_of: KeyOf | None) -> str | None:
    if target == letter.handler and letter.key is not None:
        return letter.key
    if key_of is None or letter.event is None:
        return None
    return key_of(target, letter.event)


async def replay_ran_nothing(
    store: Store, letter_id: str, pairs: Sequence[tuple[str, str]]
) -> None:
    """A replay of ``letter_id`` found every one of its (handler, key) ``pairs`` already
    succeeded, so nothing ran: put the letter back to ``pending``, unless a success
    is this letter's event, recorded after the letter was filed (then its replay did run).
    """
    letter = await store.dead_letter_get(letter_id)
    if letter is None or letter.status != "replayed":
        return
    found = await store.ledger_get(list(pairs))
    if any(
        e.status == "succeeded"
        and e.event_id == letter.event_id
        and e.finished_at >= letter.created_at
        for e in found.values()
    ):
        return
    await store.dead_letter_set_status(letter_id, "pending")
    log.warning(
        "replay had nothing to run: the handler had already succeeded; dead letter left pending",
        extra={
            "dead_letter_id": letter_id,
            "event_id": letter.event_id,
            "handler": ",".join(h for h, _ in pairs),
        },
    )


async def discard(store: Store, letter_id: str) -> DeadLetter:
    """Mark a dead letter discarded.

    Raises:
        ReplayError: the letter does not exist.
    """
    letter = await store.dead_letter_get(letter_id)
    if letter is None:
        raise ReplayError(f"no dead letter {letter_id!r}", 404)
    await store.dead_letter_set_status(letter_id, "discarded")
    letter.status = "discarded"
    return letter
