"""Python handlers of the db-changes example.

Every change from Supabase or Debezium arrives in one shape (see
``connectors.webhook.providers``): ``op``, ``table``, ``schema``, ``record``,
``old_record``, plus Debezium's ``source`` block.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from bridge import Context, Event, handler


class User(BaseModel):
    id: int
    email: str


class UserInserted(BaseModel):
    """``db/users.insert``: the catalog validates the new row before anything runs."""

    model_config = ConfigDict(extra="allow")  # keep the rest of the change (schema, source ...)

    op: str
    table: str
    record: User


@handler
async def audit(event: Event[Any], ctx: Context) -> dict[str, Any]:
    """Record who changed what; the result is kept in the ledger."""
    data = event.data_json()  # plain JSON whether or not the type has a model
    key = (data.get("record") or data.get("old_record") or {}).get("id")
    ctx.log.info("db change", extra={"table": data["table"], "op": data["op"], "row": key})
    return {"table": data["table"], "op": data["op"], "row": key}


@handler
async def welcome(event: Event[UserInserted], ctx: Context) -> dict[str, str]:
    """Stands for a call to an email provider."""
    ctx.log.info("welcome email queued", extra={"email": event.data.record.email})
    return {"queued": event.data.record.email}
