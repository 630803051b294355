"""Examples do not collide: each listens on a port of its own, so two can run side by side."""

from __future__ import annotations

import re

import pytest

from bridge.app.config import load_config
from tests.support import ROOT

EXAMPLES = sorted(ROOT.glob("examples/*/bridge.yaml"))


def test_every_example_has_a_port_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRIDGE_LISTEN", raising=False)  # the default written in each file
    ports: dict[int, list[str]] = {}
    for config in EXAMPLES:
        cfg = load_config(config, check=False)
        ports.setdefault(cfg.server.port, []).append(config.parent.name)
    assert len(EXAMPLES) >= 5
    assert {port: names for port, names in ports.items() if len(names) > 1} == {}


def test_the_ports_the_examples_document_are_the_ones_they_listen_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """db-changes' README lists every example's port; each must match its file."""
    monkeypatch.delenv("BRIDGE_LISTEN", raising=False)
    text = (ROOT / "examples" / "db-changes" / "README.md").read_text()
    listed = dict(re.findall(r"([a-z-]+)\s+(\d{4})\b", text.split("port of its own")[1]))
    assert {name: int(port) for name, port in listed.items()} == {
        config.parent.name: load_config(config, check=False).server.port for config in EXAMPLES
    }
