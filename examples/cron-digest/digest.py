"""The cron-digest example: a cron tick fans out to one digest per subscriber.

``digest/due`` is fired by the ``morning`` cron connector (see bridge.yaml) with
the tick's scheduled time. ``load_subscribers`` reads the subscriber list and
emits one ``digest/send`` per subscriber (children keep the tick's correlation id
and have deterministic ids, so a retried load never emits twice); ``send_digest``
builds and "sends" one digest by writing it to an outbox directory
(``DIGEST_OUTBOX``, default ``.bridge/digest-outbox``), one file per subscriber
per tick. A failing send is retried on its own; the other subscribers' digests
are not held up or sent again.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field

from bridge import Context, Event

HERE = Path(__file__).resolve().parent


class DigestDue(BaseModel):
    """A tick of the digest schedule."""

    subscribers: str = Field(description="The subscriber list, a JSON file next to this module.")
    scheduled_at: datetime
    scheduled_epoch: int
    late: bool


class SendDigest(BaseModel):
    """One subscriber's digest of one tick."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    name: str
    topics: list[str]
    scheduled_at: datetime
    edition: int = Field(description="The tick's scheduled epoch: one digest per edition.")


def load_subscribers(event: Event[DigestDue], ctx: Context) -> dict[str, int]:
    """Emit one ``digest/send`` per subscriber (sync: file I/O runs in a worker thread)."""
    tick = event.data
    subscribers = json.loads((HERE / tick.subscribers).read_text())
    for subscriber in subscribers:
        ctx.emit(
            "digest/send",
            {
                **subscriber,
                "scheduled_at": tick.scheduled_at.isoformat(),
                "edition": tick.scheduled_epoch,
            },
            subject=subscriber["email"],
        )
    if tick.late:
        ctx.log.warning("digest %s went out late (missed during an outage)", tick.scheduled_at)
    return {"subscribers": len(subscribers)}


def send_digest(event: Event[SendDigest], ctx: Context) -> dict[str, str]:
    """Write one subscriber's digest to the outbox (a stand-in for the mail server)."""
    digest = event.data
    topics = ", ".join(digest.topics) or "everything"
    body = (
        f"To: {digest.email}\nSubject: Your digest of {digest.scheduled_at:%A %d %B}\n\n"
        f"Hello {digest.name}, here is what happened in {topics}.\n"
    )
    outbox = Path(os.environ.get("DIGEST_OUTBOX", ".bridge/digest-outbox")) / str(digest.edition)
    outbox.mkdir(parents=True, exist_ok=True)
    path = outbox / f"{digest.email}.txt"
    path.write_text(body)  # the same file again on a retry: sending is idempotent per edition
    ctx.log.info("digest sent to %s", digest.email)
    return {"email": digest.email, "outbox": str(path)}
