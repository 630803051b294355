"""`make run` installs what running needs and nothing of the development tools.

The set is resolved from uv.lock with the extras the Makefile gives `make run`
(`uv export --frozen --offline`: no network), so a dependency added to the dev group
cannot leak into it, nor a heavy one into the runtime set unnoticed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
import subprocess
import tomllib

import pytest

from bridge.app.kinds import default_kinds
from bridge.config import Kinds, load_config_text
from bridge.errors import ConfigError
from tests.support import ROOT

# A config with a Kafka connector: its SDK comes with the `kafka` extra.
KAFKA_CONFIG = """\
version: 1
store: memory://
connectors:
  orders:
    type: kafka
    bootstrap_servers: 127.0.0.1:9092
    consume: {topics: [orders], group_id: g, event: {type: order/placed}}
events:
  order/placed: {schema: none}
handlers:
  - {id: h, on: order/placed, type: python, function: "json:dumps"}
"""

# Development tools that once sat in every `make run` venv (847 MB of it).
HEAVY_DEV = {"playwright", "moto", "matplotlib", "kubernetes-validate", "numpy", "mypy"}


def uv() -> str:
    """The uv the Makefile uses: one on PATH, else the one `make install` puts in .tools."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert shutil.which(found), "no uv: run `make install` first"
    return found


def run_extras() -> list[str]:
    """The extras `make run` installs (``RUN_EXTRAS ?= ...`` in the Makefile)."""
    match = re.search(r"^RUN_EXTRAS \?= ?(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert match is not None, "the Makefile no longer names RUN_EXTRAS"
    return match.group(1).split()


def exported(*args: str) -> set[str]:
    """The package names ``uv export`` resolves from the lock with these arguments."""
    proc = subprocess.run(
        [uv(), "export", "--frozen", "--offline", "--no-hashes", "--no-emit-project", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return {
        re.split(r"[=<>;\s\[]", line, maxsplit=1)[0].lower()
        for line in proc.stdout.splitlines()
        if line and not line.startswith(("#", " ", "-e"))
    }


def test_make_run_installs_no_development_package() -> None:
    extras = run_extras()
    assert extras, "make run installs no extra: the cron and webhook examples would not run"
    runtime = exported("--no-dev", *(f"--extra={e}" for e in extras))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev_direct = {
        re.split(r"[=<>\[!~ ]", spec, maxsplit=1)[0].lower()
        for spec in project["dependency-groups"]["dev"]
    }
    everything = exported("--all-extras")
    # The resolution works: the full set has the dev tools, the runtime set the engine's deps.
    assert everything >= HEAVY_DEV
    assert {"aiohttp", "pydantic", "croniter", "standardwebhooks"} <= runtime
    assert runtime & (HEAVY_DEV | dev_direct) == set()
    # About 50 today; the full set is about 135. A jump here is a dependency to justify.
    assert len(runtime) < 70, sorted(runtime)
    assert len(everything) > 2 * len(runtime)


def test_make_run_and_make_test_keep_separate_stamps() -> None:
    """`make run` syncs without the dev group and without removing what `make test`
    installed (--inexact), each with its own stamp, so switching re-syncs correctly."""
    makefile = (ROOT / "Makefile").read_text()
    run_sync = re.search(r"^\$\(RUN_STAMP\):.*\n\t(.*)\n", makefile, re.M)
    all_sync = re.search(r"^\$\(BIN\)/\.synced-all:.*\n\t(.*)\n", makefile, re.M)
    assert run_sync is not None and all_sync is not None
    assert "--no-dev" in run_sync.group(1) and "--inexact" in run_sync.group(1)
    assert "--all-extras" in all_sync.group(1) and "--no-dev" not in all_sync.group(1)
    assert re.search(r"^run: install-run$", makefile, re.M)
    assert re.search(r"^dev: install-run$", makefile, re.M)
    assert re.search(r"^test: install\b", makefile, re.M)


def test_a_connector_whose_extra_is_not_installed_is_a_config_error_naming_the_extra() -> None:
    """Installed without the `kafka` extra, a Kafka connector fails the config check
    (`bridge validate` and `bridge run`) with its line, not an ImportError at start."""
    kinds = default_kinds()
    without = dataclasses.replace(kinds.connectors["kafka"], sdk=("no_such_sdk_module", "kafka"))
    text = KAFKA_CONFIG
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, Kinds({**kinds.connectors, "kafka": without}, kinds.handlers))
    assert [(i.path, i.line, i.message) for i in caught.value.issues] == [
        (
            "connectors.orders.type",
            5,
            "type 'kafka' needs no_such_sdk_module, which is not installed: "
            "install the 'kafka' extra (pip install 'fanout-bridge[kafka]')",
        )
    ]
    # With the SDK present (this environment has every extra) the same file is valid.
    assert load_config_text(text, kinds).connectors["orders"].type == "kafka"


def test_every_broker_kind_names_the_extra_that_installs_its_sdk() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name in ("kafka", "rabbitmq", "sqs", "nats", "redis"):
        sdk = default_kinds().connectors[name].sdk
        assert sdk is not None and sdk[1] in extras, name
        assert importlib.util.find_spec(sdk[0]) is not None, sdk
