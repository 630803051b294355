"""docs/install.md's package route: the wheel builds, installs into a fresh virtual
environment with an extra, and its `bridge` command runs from there.

Offline: uv builds from its cached hatchling and installs the versions uv.lock pins
from its cache (`uv export --format pylock.toml` names each wheel's URL, which the
cache holds since `make install`). A plain `pip install` of the wheel, as the page
shows it, reaches the package index instead.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.unit.test_install import KAFKA_CONFIG, uv


def run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )
    return proc


@pytest.mark.e2e
def test_the_wheel_installs_with_an_extra_and_runs_outside_the_repository(tmp_path: Path) -> None:
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    built = run(uv(), "build", "--offline", "--wheel", "-o", dist)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("fanout_bridge-*-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "bridge/ui/static/index.html" in names  # the UI ships in the wheel

    lock = tmp_path / "pylock.toml"
    exported = run(
        uv(), "export", "--frozen", "--offline", "--no-dev", "--extra", "postgres",
        "--no-emit-project", "--format", "pylock.toml", "-o", lock,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    python = venv / "bin" / "python"
    steps = [
        (uv(), "venv", "--python", sys.executable, venv),
        (uv(), "pip", "install", "--offline", "--python", python, "-r", lock),
        (uv(), "pip", "install", "--offline", "--python", python, f"{wheel}[postgres]"),
        (uv(), "pip", "check", "--python", python),
    ]
    for step in steps:
        done = run(*step, cwd=tmp_path)
        assert done.returncode == 0, f"{step}\n{done.stdout}{done.stderr}"

    bridge = venv / "bin" / "bridge"
    version = run(bridge, "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, "bridge 0.1.0\n")
    # The installed package, not the source tree, and the extra's driver with it.
    where = run(python, "-c", "import bridge, asyncpg; print(bridge.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(venv))
    newsletter = ROOT / "examples" / "newsletter" / "bridge.yaml"
    valid = run(bridge, "validate", "-c", newsletter, cwd=tmp_path)
    assert valid.returncode == 0, valid.stderr
    # Without the kafka extra, a Kafka connector is one config error naming the extra.
    config = tmp_path / "kafka.yaml"
    config.write_text(KAFKA_CONFIG)
    refused = run(bridge, "validate", "-c", config, cwd=tmp_path)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    assert f"{config}:5: connectors.orders.type: type 'kafka' needs aiokafka" in refused.stderr
    assert "pip install 'fanout-bridge[kafka]'" in refused.stderr
    # Without the postgres extra's driver, a PostgreSQL store is one error line too.
    removed = run(uv(), "pip", "uninstall", "--python", python, "asyncpg", cwd=tmp_path)
    assert removed.returncode == 0, removed.stderr
    store = "postgresql://127.0.0.1:5432/postgres"
    no_driver = run(bridge, "dlq", "-c", newsletter, "--store", store, "list", cwd=tmp_path)
    assert (no_driver.returncode, no_driver.stderr) == (
        1,
        "error: the PostgreSQL store needs asyncpg, which is not installed: install the "
        "'postgres' extra (pip install 'fanout-bridge[postgres]')\n",
    )
