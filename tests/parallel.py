"""The suite in parallel: ``make test`` runs it with pytest-xdist (``-n 4``).

Each worker is a pytest process of its own: session fixtures (Tansu, moto) start once
per worker on free ports, ``tmp_path`` is per worker, and ``tests.support.free_port``
gives each worker ports of its own. Broker resources are named uniquely per test.

``@pytest.mark.alone`` is for the few tests that must not run beside any other test: they
disrupt a shared broker (``rabbitmqctl stop_app``, ``close_all_connections``), or what they
set up to prove depends on having the machine's cores to themselves. Such a test waits until the tests running on the other workers end, and they wait for
it to end before their next test starts. Workers take a lock around each test (shared,
or exclusive for an ``alone`` test) in the run's lock directory; a gate in front of it
lets a waiting ``alone`` test in before new tests. The wait is outside the test's
timeout. Without ``-n`` nothing is locked: the tests already run one at a time.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def lock_dir(run: str) -> Path:
    return Path(tempfile.gettempdir()) / f"bridge-tests-{run}"


def _parallel(config: pytest.Config) -> bool:
    """True in the controller of a run with workers (``-n N``, N > 0)."""
    workers = config.getoption("numprocesses", default=None)
    return not hasattr(config, "workerinput") and workers not in (None, 0, "0")


def pytest_configure(config: pytest.Config) -> None:
    # The controller names the run, so it knows which lock directory to remove.
    if _parallel(config) and config.getoption("testrunuid", default=None) is None:
        config.option.testrunuid = uuid.uuid4().hex


def pytest_unconfigure(config: pytest.Config) -> None:
    if _parallel(config):
        shutil.rmtree(lock_dir(config.option.testrunuid), ignore_errors=True)


def _flock(path: Path, mode: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """Hold the run's lock around the whole test (setup, call, teardown).

    ``tryfirst``: outside pytest-timeout's wrapper, so waiting for the lock is not counted
    in the test's timeout.
    """
    workerinput = getattr(item.config, "workerinput", None)
    if workerinput is None:
        yield
        return
    folder = lock_dir(workerinput["testrunuid"])
    folder.mkdir(exist_ok=True)
    alone = item.get_closest_marker("alone") is not None
    gate = _flock(folder / "gate", fcntl.LOCK_EX)
    try:
        held = _flock(folder / "tests", fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
    except BaseException:
        os.close(gate)
        raise
    if not alone:  # an alone test keeps the gate: no new test starts meanwhile
        os.close(gate)
    try:
        yield
    finally:
        os.close(held)
        if alone:
            os.close(gate)
