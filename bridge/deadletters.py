"""Dead-letter operations shared by the CLI and the HTTP API: replay and discard."""

from __future__ import annotations

import uuid

import orjson

from bridge.errors import BridgeError
from bridge.store.contracts import DeadLetter, InboxEntry, Store


class ReplayError(BridgeError):
    """A dead letter cannot be replayed (unknown id, or it never became an event)."""


async def replay(store: Store, letter_id: str, handler: str | None = None) -> InboxEntry:
    """Put a dead letter's event back into the inbox for one handler.

    The handler is the one that failed unless ``handler`` names another; a
    letter that no handler took (unrouted) is routed again as usual. The running
    bridge picks the entry up from the inbox.

    Raises:
        ReplayError: the letter does not exist or holds no event.
    """
    letter = await store.dead_letter_get(letter_id)
    if letter is None:
        raise ReplayError(f"no dead letter {letter_id!r}")
    if letter.event is None:
        raise ReplayError(
            f"dead letter {letter_id} holds a message that never became an event ({letter.reason});"
            " fix it at its source and send it again"
        )
    entry = InboxEntry(
        id=f"replay-{letter.id}-{uuid.uuid4().hex[:12]}",
        body=orjson.dumps(letter.event),
        source="replay",
        handler=handler or letter.handler,
    )
    await store.inbox_put([entry])
    await store.dead_letter_set_status(letter.id, "replayed")
    return entry


async def discard(store: Store, letter_id: str) -> DeadLetter:
    """Mark a dead letter discarded.

    Raises:
        ReplayError: the letter does not exist.
    """
    letter = await store.dead_letter_get(letter_id)
    if letter is None:
        raise ReplayError(f"no dead letter {letter_id!r}")
    await store.dead_letter_set_status(letter_id, "discarded")
    letter.status = "discarded"
    return letter
