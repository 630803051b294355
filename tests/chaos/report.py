"""The JSON report every chaos scenario writes.

Full-size runs (``make chaos``) write ``tests/chaos/results/<scenario>.json``, which is
committed; the small versions in ``make test`` write ``tests/chaos/results/small/``,
which is not.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import CHAOS_FULL

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class ChaosReport:
    """Counted outcome of one scenario. ``extra`` holds scenario-specific figures."""

    scenario: str
    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)

    def write(self) -> Path:
        """Write the report and return its path."""
        folder = RESULTS if CHAOS_FULL else RESULTS / "small"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.scenario}.json"
        data = asdict(self)
        data["size"] = "full" if CHAOS_FULL else "small"
        data["duration_seconds"] = round(time.time() - self.started_at, 2)
        data["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
        # Whole or not at all, whatever else reads or writes the folder meanwhile (a
        # parallel run's other workers, an interrupted run).
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(partial, path)
        return path
