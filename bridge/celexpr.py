"""The CEL binding (`cel` package), imported without its interactive REPL.

The package imports its REPL module (prompt_toolkit, about a second) when imported;
the bridge only compiles and runs expressions, so that module is stubbed first.
"""

from __future__ import annotations

import sys
import types

sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))

import cel  # noqa: E402

__all__ = ["cel"]
