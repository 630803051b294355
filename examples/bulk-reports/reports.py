"""The bulk-reports example: one request for many reports, one notification at the end.

``reports/generate-bulk`` is split into ``reports/chunk`` events and each chunk into
one ``reports/generate`` per report (both ``emit`` handlers in bridge.yaml).
``generate_report`` builds one report, uploads it in a durable step, and announces
the outcome with ``reports/generated`` or ``reports/failed``; the ``wait-for-reports``
join collects one outcome per report id and emits ``reports/batch-finished``, which
``notify_requester`` turns into the one notification that lists the failures.

The outside world is a directory (``REPORTS_DIR``, default ``.bridge/bulk-reports``):
uploads land in ``<batch>/<report>.txt`` and are logged to ``uploads.jsonl``; the
notifications go to ``notifications.jsonl``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from bridge import Context, Event, handler


class BulkReportRequest(BaseModel):
    """A request to generate several reports."""

    batch_id: str
    report_ids: list[str] = Field(min_length=1, max_length=1000)
    requested_by: str


class ReportChunk(BaseModel):
    """Some of a request's report ids."""

    batch_id: str
    report_ids: list[str]


class GenerateReport(BaseModel):
    """One report to generate."""

    batch_id: str
    report_id: str


class ReportGenerated(BaseModel):
    """A report was generated and uploaded."""

    batch_id: str
    report_id: str
    url: str


class ReportFailed(BaseModel):
    """A report cannot be generated (retrying would not help)."""

    batch_id: str
    report_id: str
    reason: str


class ReportBroken(Exception):
    """The report engine refuses this report for good."""


def outside() -> Path:
    """The directory that stands in for object storage and the mail server."""
    path = Path(os.environ.get("REPORTS_DIR", ".bridge/bulk-reports"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _append(name: str, record: dict[str, Any]) -> None:
    with (outside() / name).open("a") as out:
        out.write(json.dumps(record) + "\n")


async def render(report: GenerateReport) -> str:
    """The report engine: ids containing "broken" fail for good, "unavailable" every time."""
    await asyncio.sleep(0.02)
    if "broken" in report.report_id:
        raise ReportBroken(f"report {report.report_id} has no data source")
    if "unavailable" in report.report_id:
        raise ConnectionError("the data warehouse is unavailable")  # retried, then dead-lettered
    return f"report {report.report_id} of batch {report.batch_id}\n"


def upload(batch_id: str, report_id: str, body: str) -> dict[str, str]:
    """Store the report and return where it is (an external side effect)."""
    target = outside() / batch_id / f"{report_id}.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body)
    digest = hashlib.sha256(body.encode()).hexdigest()[:12]
    _append("uploads.jsonl", {"batch_id": batch_id, "report_id": report_id, "sha": digest})
    return {"url": target.resolve().as_uri()}


@handler
async def generate_report(event: Event[GenerateReport], ctx: Context) -> dict[str, str]:
    """Generate, upload (once, however often the run is retried), announce the outcome."""
    report = event.data
    try:
        body = await render(report)
    except ReportBroken as exc:
        # A permanent failure is an outcome too: say so, so the join need not time out.
        ctx.emit("reports/failed", {**report.model_dump(), "reason": str(exc)})
        ctx.log.warning("report %s failed: %s", report.report_id, exc)
        return {"report_id": report.report_id, "failed": str(exc)}
    stored = await ctx.step("upload", upload, report.batch_id, report.report_id, body)
    if "flaky" in report.report_id and ctx.attempt == 1:
        # After the upload: the retry gets the step's kept result and does not upload again.
        raise ConnectionError("search index unavailable")
    ctx.emit("reports/generated", {**report.model_dump(), "url": stored["url"]})
    ctx.log.info("report %s generated", report.report_id)
    return {"report_id": report.report_id, "url": stored["url"]}


@handler
async def notify_requester(event: Event[Any], ctx: Context) -> dict[str, Any]:
    """Send the one notification of a request: what was generated, what failed."""
    outcome = event.data
    request = outcome["start"]["data"]
    members = outcome["members"]
    generated = sorted(m["key"] for m in members if m["type"] == "reports/generated")
    failed = sorted(m["key"] for m in members if m["type"] == "reports/failed")
    missing = sorted(outcome.get("missing") or [])  # only when the join timed out
    notification = {
        "to": request["requested_by"],
        "batch_id": request["batch_id"],
        "status": outcome["status"],
        "generated": generated,
        "failed": failed,
        "missing": missing,
    }
    await ctx.step("send", _append, "notifications.jsonl", notification)
    ctx.log.info(
        "batch %s: %d generated, %d failed, %d missing",
        request["batch_id"],
        len(generated),
        len(failed),
        len(missing),
    )
    return {"generated": len(generated), "failed": failed, "missing": missing}
