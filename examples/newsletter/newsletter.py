"""The newsletter example: one ``subscriber/created`` event, four independent handlers.

Each handler stands for a call to a different system (an email provider, a
profile service, analytics, a preferences store). They run at once; a failure
in one is retried on its own and never re-runs the others.

To see one fail: while the file ``.bridge/email-down`` exists (next to the store,
under the directory the bridge runs in), the email provider is down and every
attempt of ``send-welcome-email`` fails; after its 5 attempts the run is
dead-lettered, and ``bridge dlq replay`` runs it again once the file is gone
(docs/quickstart-snippet.md).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from pydantic import BaseModel, Field

from bridge import Context, Event, handler


class SubscriberCreated(BaseModel):
    """A new newsletter subscriber."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    name: str = Field(min_length=1, max_length=200)
    preferences: list[str] = Field(default_factory=list)
    source: str = "web"


def _ref(prefix: str, text: str) -> str:
    return f"{prefix}_{hashlib.sha1(text.encode()).hexdigest()[:10]}"


# The quickstart's outage switch, relative to the bridge's working directory.
EMAIL_DOWN = Path(".bridge") / "email-down"


@handler
async def send_welcome_email(event: Event[SubscriberCreated], ctx: Context) -> dict[str, str]:
    await asyncio.sleep(0.01)  # the email provider's API call
    if EMAIL_DOWN.exists():
        raise ConnectionError(f"smtp.example.com is down ({EMAIL_DOWN} exists)")
    ctx.log.info("welcome email sent to %s", event.data.email)
    return {"message_id": _ref("msg", event.id)}


@handler
async def create_profile(event: Event[SubscriberCreated], ctx: Context) -> dict[str, str]:
    await asyncio.sleep(0.005)
    ctx.log.info("profile created for %s", event.data.name)
    return {"profile_id": _ref("prof", event.data.email)}


@handler
async def track_analytics(event: Event[SubscriberCreated], ctx: Context) -> None:
    ctx.log.info("signup tracked", extra={"signup_source": event.data.source})


@handler
async def setup_preferences(event: Event[SubscriberCreated], ctx: Context) -> dict[str, list[str]]:
    ctx.log.info("preferences saved: %s", ", ".join(event.data.preferences))
    return {"topics": sorted(event.data.preferences)}
