"""The shipped dashboard and alert rules are what their sources build, and the rules
pass promtool: every alert fires on series built to fire it and stays quiet otherwise."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
MONITORING = ROOT / "deploy" / "k8s" / "monitoring"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool is not installed: `make prometheus` installs Debian's package")
    out = subprocess.run(
        [tool, *args], cwd=PROM, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def alert_names() -> set[str]:
    rules = yaml.safe_load((PROM / "bridge-alerts.yaml").read_text())
    return {r["alert"] for g in rules["groups"] for r in g["rules"]}


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    assert "SUCCESS: 6 rules found" in promtool("check", "rules", "bridge-alerts.yaml")
    promtool("test", "rules", "bridge-alerts.test.yaml")


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    tests = yaml.safe_load((PROM / "bridge-alerts.test.yaml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            fired_here = check["exp_alerts"]
            (fired if fired_here else quiet).add(check["alertname"])
            # A case that fires for one series names it, so the others are held quiet.
            if fired_here and len(case["input_series"]) > len(fired_here):
                quiet.add(check["alertname"])
    assert fired == alert_names()
    assert quiet == alert_names()


def test_prometheus_rule_holds_the_same_rules() -> None:
    kubectl = Path(sys.executable).parent / "kubectl"
    out = subprocess.run(
        [str(kubectl), "kustomize", str(MONITORING)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (doc,) = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["kind"] == "PrometheusRule"
    assert doc["spec"] == yaml.safe_load((PROM / "bridge-alerts.yaml").read_text())


def dashboard_module() -> Any:
    spec = importlib.util.spec_from_file_location("dashboard", GRAFANA / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboard_is_the_generated_one() -> None:
    committed = (GRAFANA / "bridge-dashboard.json").read_text()
    assert committed == dashboard_module().render(), (
        "deploy/grafana/bridge-dashboard.json is stale: run python deploy/grafana/dashboard.py"
    )
