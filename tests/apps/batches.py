"""A batching handler for the batch chaos test: per batch, one line per event (format of
``tests.apps.orchestration``) with ``what`` = ``batch:<batch uuid>``, then a short
pause (``BATCH_WORK_SECONDS``, default 0.02) so a kill can land mid-batch."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

from bridge import Context, Event
from tests.apps.orchestration import _write


async def take(events: list[Event[Any]], ctx: Context) -> dict[str, Any]:
    batch = uuid.uuid4().hex
    for event in events:
        _write(ctx, event.id, f"batch:{batch}")
    await asyncio.sleep(float(os.environ.get("BATCH_WORK_SECONDS", "0.02")))
    return {"batch": batch, "size": len(events)}
