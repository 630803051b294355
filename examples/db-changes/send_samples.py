"""Post the sample payloads to a running db-changes bridge, signed as the providers sign them.

Run: ``python examples/db-changes/send_samples.py`` with the same ``SUPABASE_WEBHOOK_SECRET`` and
``DEBEZIUM_WEBHOOK_KEY`` as the bridge (``BRIDGE_URL``, default http://127.0.0.1:8791).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import aiohttp
from standardwebhooks.webhooks import Webhook

HERE = Path(__file__).parent


async def main() -> None:
    url = os.environ.get("BRIDGE_URL", "http://127.0.0.1:8791")
    supabase = (HERE / "payloads" / "supabase-insert.json").read_bytes()
    debezium = (HERE / "payloads" / "debezium-update.json").read_bytes()
    msg_id, now = f"msg_{uuid4().hex}", datetime.now(UTC)
    signed = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(
            os.environ.get("DEBEZIUM_WEBHOOK_KEY", "whsec_ZGV2LW9ubHktZGViZXppdW0ta2V5")
        ).sign(msg_id, now, debezium.decode()),
    }
    requests = [
        (
            "/hooks/supabase",
            supabase,
            {
                "x-webhook-secret": os.environ.get(
                    "SUPABASE_WEBHOOK_SECRET", "dev-only-supabase-secret"
                )
            },
        ),
        ("/hooks/debezium", debezium, signed),
    ]
    async with aiohttp.ClientSession() as session:
        for path, body, headers in requests:
            headers = {"content-type": "application/json", **headers}
            async with session.post(url + path, data=body, headers=headers) as resp:
                print(path, resp.status, await resp.text())


if __name__ == "__main__":
    asyncio.run(main())
