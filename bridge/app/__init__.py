"""The wiring: the one place that assembles the engine, the connectors and the handlers.

Everything else under ``bridge/`` is the engine, which imports neither ``connectors``
nor ``handlers`` nor a broker SDK; the modules here (the CLI, the runtime, dev mode
and the ``bridge test`` runner) are where the kinds meet the engine.
"""

from __future__ import annotations

from bridge.app.config import config_model, json_schema, load_config, load_config_text
from bridge.app.kinds import default_kinds

__all__ = ["config_model", "default_kinds", "json_schema", "load_config", "load_config_text"]
