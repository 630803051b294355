"""A user's mistake on the command line gets one clear line, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support import ROOT, bridge_command

NEWSLETTER = ROOT / "examples" / "newsletter" / "bridge.yaml"

CONFIG = """\
version: 1
store: memory://
server: {{listen: "{listen}"}}
events:
  job/run: {{schema: none}}
handlers:
  - {{id: steady, on: job/run, type: python, function: "tests.apps.recorder:record"}}
"""


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("localhost", "'localhost' is not host:port, e.g. 127.0.0.1:8787"),
        ("127.0.0.1:99999", "port '99999' of '127.0.0.1:99999' is not a number in 0-65535"),
        ("127.0.0.1:http", "port 'http' of '127.0.0.1:http' is not a number in 0-65535"),
    ],
)
def test_a_bad_listen_address_is_refused_as_the_config_file_refuses_it(
    tmp_path: Path, listen: str, reason: str
) -> None:
    for command in ("run", "dev"):
        proc = bridge_command(command, "-c", str(NEWSLETTER), "--listen", listen)
        assert proc.returncode == 2, proc.stderr
        assert f"bridge {command}: error: argument --listen: {reason}" in proc.stderr
        assert "Traceback" not in proc.stderr
    # The same value in the file: the same reason, from the same check.
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(listen=listen))
    proc = bridge_command("validate", "-c", str(config))
    assert proc.returncode == 1
    assert "server.listen" in proc.stderr and reason in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.e2e
def test_a_busy_port_is_one_line_naming_the_port_and_the_listen_option(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(CONFIG.format(listen="127.0.0.1:8787"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = bridge_command(
            "run", "-c", str(config), "--listen", f"127.0.0.1:{port}", cwd=tmp_path
        )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot listen on 127.0.0.1:{port}: port {port} is already in use; "
        "choose another with --listen HOST:PORT or server.listen"
    ]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args",
    [("schema",), ("validate", "-c", str(NEWSLETTER)), ("--help",)],
)
def test_output_into_a_closed_pipe_is_no_error(args: tuple[str, ...]) -> None:
    """`bridge schema | head`: the reader is gone before the bridge writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bridge", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 0


@pytest.mark.e2e
def test_the_schema_piped_into_head_is_cut_short_quietly() -> None:
    """The pipe as a shell runs it; `pipefail` makes the bridge's own exit code count."""
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m bridge schema | head -c 1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "{", "")


@pytest.mark.e2e
def test_version_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    proc = bridge_command("--version")
    assert (proc.returncode, proc.stdout) == (0, f"bridge {version}\n")


@pytest.mark.e2e
def test_validate_warns_when_there_is_nothing_to_run(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text("version: 1\nstore: memory://\n")
    proc = bridge_command("validate", "-c", str(config))
    # Valid (exit 0), but a bridge that would do nothing is worth a warning.
    assert proc.returncode == 0
    assert proc.stdout == f"{config}: ok (0 connectors, 0 handlers, 0 event types)\n"
    assert proc.stderr == (
        f"warning: {config} has no handlers and no connectors: "
        "events would be received and nothing would run\n"
    )
    proc = bridge_command("validate", "-c", str(NEWSLETTER))
    assert proc.returncode == 0 and "warning" not in proc.stderr


@pytest.mark.e2e
def test_other_mistakes_get_one_line(tmp_path: Path) -> None:
    nowhere = tmp_path / "no-such-dir" / "schema.json"
    proc = bridge_command("schema", "-o", str(nowhere))
    assert (proc.returncode, proc.stderr) == (
        1,
        f"error: cannot write {nowhere}: No such file or directory\n",
    )
    for flag, value, reason in [
        ("--limit", "0", "'0' is not a whole number above 0"),
        ("--log-level", "loud", "'loud' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ]:
        args = ("dlq", "-c", str(NEWSLETTER), "list") if flag == "--limit" else ("run",)
        proc = bridge_command(*args, flag, value)
        assert proc.returncode == 2
        assert proc.stderr.splitlines()[-1].endswith(f"error: argument {flag}: {reason}")
