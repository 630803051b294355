"""The departments example: a hierarchy of events, each parent aggregating its children.

``quarter/close`` -> one ``department/close`` per department -> one ``task/run`` per
task (``emit`` handlers in bridge.yaml; every child keeps the correlation id of the
quarter close and names its parent in ``parentid``). ``task/run`` has ``on_complete:
task/finished``, so each task ends in one ``task/finished`` event whether it
succeeded or was dead-lettered; the ``collect-department`` join waits for all of a
department's tasks, ``summarize_department`` aggregates them into
``department/closed``, and the ``collect-quarter`` join waits for every department
before ``report_quarter`` writes the quarter's report.

The outside world is a directory (``DEPARTMENTS_DIR``, default ``.bridge/departments``):
``tasks.jsonl`` logs every task execution, ``summaries.jsonl`` every department's
summary and ``quarters.jsonl`` every quarter report.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from bridge import Context, Event, Fatal, handler


class Department(BaseModel):
    """A department and the tasks it must finish."""

    name: str = Field(pattern=r"^[a-z0-9-]+$")
    tasks: list[str] = Field(min_length=1, max_length=100)


class QuarterClose(BaseModel):
    """Close a quarter: every department runs its tasks."""

    quarter: str = Field(pattern=r"^[0-9]{4}-Q[1-4]$")
    departments: list[Department] = Field(min_length=1, max_length=50)


class DepartmentClose(BaseModel):
    """One department's part of a quarter close."""

    quarter: str
    department: str
    tasks: list[str]


class TaskRun(BaseModel):
    """One task of one department."""

    quarter: str
    department: str
    task: str


class DepartmentClosed(BaseModel):
    """A department's summary: every task accounted for."""

    quarter: str
    department: str
    tasks: int
    succeeded: list[str]
    failed: list[str]
    missing: list[str] = Field(default_factory=list)


def _append(name: str, record: dict[str, Any]) -> None:
    root = Path(os.environ.get("DEPARTMENTS_DIR", ".bridge/departments"))
    root.mkdir(parents=True, exist_ok=True)
    with (root / name).open("a") as out:
        out.write(json.dumps(record) + "\n")


@handler
async def run_task(event: Event[TaskRun], ctx: Context) -> dict[str, str]:
    """Do one task; a task whose name contains "fail" fails for good (a dead letter)."""
    task = event.data
    _append(
        "tasks.jsonl",
        {
            "task": event.subject,
            "attempt": ctx.attempt,
            "correlation_id": event.correlationid,
            "parent_id": event.parentid,
        },
    )
    await asyncio.sleep(0.01)
    if "fail" in task.task:
        raise Fatal(f"{task.department}: {task.task} cannot run this quarter")
    return {"task": task.task, "result": "done"}


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


@handler
async def summarize_department(event: Event[Any], ctx: Context) -> dict[str, Any]:
    """Aggregate a department's finished tasks (the join's outcome) into department/closed."""
    outcome = event.data
    start = outcome["start"]["data"]
    members = outcome["members"]
    summary = DepartmentClosed(
        quarter=start["quarter"],
        department=start["department"],
        tasks=len(start["tasks"]),
        succeeded=sorted(_name(m["key"]) for m in members if m["data"]["status"] == "succeeded"),
        failed=sorted(_name(m["key"]) for m in members if m["data"]["status"] != "succeeded"),
        missing=sorted(_name(k) for k in outcome.get("missing") or []),
    )
    record = {
        **summary.model_dump(),
        "status": outcome["status"],
        "correlation_id": event.correlationid,
        "department_event_id": event.parentid,
    }
    await ctx.step("record", _append, "summaries.jsonl", record)
    ctx.emit("department/closed", summary, subject=event.subject)
    ctx.log.info(
        "%s closed: %d of %d tasks succeeded",
        summary.department,
        len(summary.succeeded),
        summary.tasks,
    )
    return summary.model_dump()


@handler
async def report_quarter(event: Event[Any], ctx: Context) -> dict[str, Any]:
    """Write the quarter's report once every department has closed."""
    outcome = event.data
    quarter = outcome["start"]["data"]["quarter"]
    departments = {m["key"]: m["data"] for m in outcome["members"]}
    report = {
        "quarter": quarter,
        "status": outcome["status"],
        "departments": sorted(departments),
        "failed_tasks": sorted(
            f"{name}/{task}" for name, d in departments.items() for task in d["failed"]
        ),
        "missing_departments": sorted(outcome.get("missing") or []),
        "correlation_id": event.correlationid,
    }
    await ctx.step("record", _append, "quarters.jsonl", report)
    ctx.log.info("quarter %s closed: %d failed tasks", quarter, len(report["failed_tasks"]))
    return report
