"""The bulk-reports example: one request for many reports becomes one event per report.

``reports/generate-bulk`` carries a list of report ids; the ``emit`` handler in
bridge.yaml splits it into ``reports/generate`` events (children keep the
request's correlation id and have deterministic ids); ``generate_report`` builds
each one on its own, so one slow or failing report never holds up the others.
"""

from __future__ import annotations

import asyncio
import hashlib

from pydantic import BaseModel, Field

from bridge import Context, Event, Fatal, handler


class BulkReportRequest(BaseModel):
    """A request to generate several reports."""

    batch_id: str
    report_ids: list[str] = Field(min_length=1, max_length=1000)
    requested_by: str


class GenerateReport(BaseModel):
    """One report to generate."""

    batch_id: str
    report_id: str


@handler
async def generate_report(event: Event[GenerateReport], ctx: Context) -> dict[str, str]:
    report = event.data
    if report.report_id.startswith("missing-"):
        raise Fatal(f"report {report.report_id} does not exist")
    await asyncio.sleep(0.05)  # the report engine at work
    digest = hashlib.sha256(f"{report.batch_id}/{report.report_id}".encode()).hexdigest()[:12]
    ctx.log.info("report %s generated", report.report_id, extra={"batch_id": report.batch_id})
    return {"report_id": report.report_id, "url": f"s3://reports/{report.batch_id}/{digest}.pdf"}
