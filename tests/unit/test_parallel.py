"""The suite in parallel (tests/parallel.py, ``make test`` runs ``-n``): an ``alone`` test
runs with no other test of the run at the same time, and each worker's free ports are
its own."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.parallel import lock_dir
from tests.support import ROOT, free_port

PROBE = """\
import os
import time

import pytest


def note(what):
    fd = os.open(os.environ["PARALLEL_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{what}\\n".encode())
    os.close(fd)


@pytest.fixture(autouse=True)
def _noted(request):
    note(f"start {request.node.name}")
    yield
    note(f"end {request.node.name}")


@pytest.mark.parametrize("n", range(8))
def test_other(n):
    time.sleep(0.3)


@pytest.mark.alone
def test_alone_first():
    time.sleep(0.5)


@pytest.mark.parametrize("n", range(8))
def test_more(n):
    time.sleep(0.3)


@pytest.mark.alone
def test_alone_second():
    time.sleep(0.5)
"""


def test_an_alone_test_runs_while_no_other_test_does(tmp_path: Path) -> None:
    (tmp_path / "test_probe.py").write_text(PROBE)
    log = tmp_path / "log"
    run = uuid.uuid4().hex
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PARALLEL_LOG": str(log)}
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        env.pop(name, None)  # this test itself may run on a worker
    args = ["-n", "3", "-p", "tests.parallel", "-p", "no:cacheprovider", "-p", "no:asyncio"]
    args += ["-o", "markers=alone: probe", f"--testrunuid={run}", "test_probe.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "18 passed" in proc.stdout, proc.stdout
    running: set[str] = set()
    alone_seen = 0
    for line in log.read_text().splitlines():
        what, name = line.split(" ", 1)
        if what == "start":
            # Nothing else runs when an alone test starts, and nothing starts during one.
            assert not any(n.startswith("test_alone") for n in running), (line, running)
            if name.startswith("test_alone"):
                assert not running, (line, running)
                alone_seen += 1
            running.add(name)
        else:
            running.remove(name)
    assert alone_seen == 2
    assert not running
    assert not lock_dir(run).exists()  # removed at the end of the run


@pytest.mark.parametrize("worker", range(3))
def test_each_worker_gets_ports_of_its_own(monkeypatch: pytest.MonkeyPatch, worker: int) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
    ports = [free_port() for _ in range(20)]
    assert {(p // 2) % 3 for p in ports} == {worker}
