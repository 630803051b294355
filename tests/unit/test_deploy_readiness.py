"""The deploy configs' readiness and Host settings, as docs/deployment.md describes them.

* sidecar: ``readiness.connectors: none``, so a broker outage does not take the
  application's pod out of its Services;
* standalone (base): ``none`` as well, since its Service carries only HTTP, which needs the
  store and not the brokers; and ``server.allowed_hosts`` holds the Service's names;
* compose: other compose services reach the bridge as ``bridge``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bridge.admission import host_allowed
from bridge.config.models import ReadinessConfig, ServerConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _config(path: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / path).read_text())
    return loaded


def test_sidecar_and_standalone_readiness_do_not_count_connectors() -> None:
    for path in ("k8s/overlays/sidecar/bridge.yaml", "k8s/base/bridge.yaml"):
        readiness = ReadinessConfig.model_validate(_config(path)["readiness"])
        assert readiness.connectors == "none", path


def test_service_names_are_allowed_hosts() -> None:
    base = _config("k8s/base/bridge.yaml")["server"]["allowed_hosts"]
    allowed = tuple(ServerConfig(allowed_hosts=base).allowed_hosts)
    for host in ("bridge:8787", "bridge.default.svc.cluster.local:8787", "10.0.3.7:8787"):
        assert host_allowed(host, allowed), host
    assert not host_allowed("evil.example:8787", allowed)
    compose = tuple(_config("compose/bridge.yaml")["server"]["allowed_hosts"])
    assert host_allowed("bridge:8787", compose)
