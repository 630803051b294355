"""The README and docs/ cannot rot silently.

* every config example (```yaml) in the README and docs/ loads;
* every test they name as proof exists;
* the README stays a newcomer's read (at most 400 lines);
* every relative link in the README and docs/ resolves, anchors included;
* every shell command in the README's ```sh blocks is run by a test: the
  ``bridge`` commands by tests/e2e/test_readme_commands.py against a running
  example, the long-running ``make`` targets here with ``make -n``.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

from bridge.app import load_config_text
from tests.support import ROOT

ENV = {
    "KAFKA_BOOTSTRAP": "kafka:9092",
    "RABBIT_PASSWORD": "x",
    "SUPABASE_WEBHOOK_SECRET": "s",
    "API_TOKEN": "t",
    "REDIS_PASSWORD": "r",
    "SENTINEL_PASSWORD": "s",
}
MAX_README_LINES = 400
# Long-running commands (they serve or test until stopped): what `make -n` must show
# they run. The commands they run are covered elsewhere (the examples' e2e tests).
LONG_RUNNING = {
    "make run": ".venv/bin/bridge run -c examples/newsletter/bridge.yaml",
    "make test": ".venv/bin/pytest",
}
# The newsletter example's outage switch (examples/newsletter/newsletter.py).
SWITCH = ("touch .bridge/email-down", "rm .bridge/email-down")
MAKE_VARIABLES = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def yaml_blocks(doc: Path) -> list[str]:
    """Each ```yaml block, dedented: a block may sit indented inside a list item."""
    blocks = re.findall(r"^([ \t]*)```yaml\n(.*?)^[ \t]*```", doc.read_text(), flags=re.S | re.M)
    return [textwrap.dedent(block) for _, block in blocks]


def readme_commands() -> list[str]:
    """Each command of the README's ```sh blocks: continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command:
                commands.append(re.sub(r"\s+", " ", command))
    return commands


def test_every_yaml_block_in_the_readme_and_docs_loads(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("pw\n")
    loaded = {}
    for doc in documents():
        blocks = yaml_blocks(doc)
        if doc.name == "config.md":
            continue  # generated from the models; tests/unit/test_schema.py checks it
        for block in blocks:
            text = block.replace("/run/secrets/kafka-password", str(secret))
            if not text.startswith("version:"):
                text = "version: 1\nstore: memory://\n" + text
            # Handler modules of the README's main example live in examples/newsletter.
            load_config_text(text, ENV, base_dir=ROOT / "examples" / "newsletter", check=False)
        loaded[doc.name] = len(blocks)
    assert loaded["README.md"] >= 1 and sum(loaded.values()) >= 10, loaded


def test_every_python_block_in_the_readme_compiles() -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        compile(block, "README.md", "exec")


def test_the_readme_documents_every_public_member_of_context() -> None:
    from bridge import Context

    text = (ROOT / "README.md").read_text()
    public = {n for n in [*Context.__slots__, *vars(Context)] if not n.startswith("_")}
    assert public >= {"attempt", "emit", "event", "handler_id", "log", "log_fields", "step"}
    missing = sorted(n for n in public if f"ctx.{n}" not in text)
    assert not missing, f"README does not document Context's {missing}"


def test_every_test_the_readme_and_docs_name_as_proof_exists() -> None:
    """A guarantee's proof that was renamed or deleted fails here, not in a reader's hands."""
    named = 0
    for doc in documents():
        current: Path | None = None
        for cell in re.findall(r"`(tests/[^`]+|::[^`]+)`", doc.read_text()):
            path, _, rest = cell.partition("::")
            if path:
                current = ROOT / path.split(" ")[0]
                assert current.exists(), f"{doc.name} names {path}, which does not exist"
            if rest:
                assert current is not None, f"{doc.name}: {cell} names no file before it"
                name = rest.split("[")[0].strip()
                source = current.read_text()
                assert re.search(rf"def {re.escape(name)}\b", source), f"{current} has no {name}"
                named += 1
    assert named >= 20


def test_the_readme_is_at_most_400_lines() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail to docs/"


def anchors(doc: Path) -> set[str]:
    """GitHub's anchors of the headings of ``doc``."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", doc.read_text(), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_relative_link_in_the_readme_and_docs_resolves() -> None:
    broken = []
    checked = 0
    for doc in documents():
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            checked += 1
            if not file.exists():
                broken.append(f"{doc.name}: {target}")
                continue
            if anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert checked >= 30 and not broken, broken


def test_every_shell_command_in_the_readme_is_run_by_a_test() -> None:
    commands = readme_commands()
    long_running = [c for c in commands if c in LONG_RUNNING]
    assert sorted(long_running) == sorted(LONG_RUNNING), long_running
    # The rest, each run by tests/e2e/test_readme_commands.py: `bridge` commands and the
    # example's outage switch.
    rest = [c for c in commands if c not in LONG_RUNNING and c not in SWITCH]
    assert len(rest) >= 4 and all(c.startswith(".venv/bin/bridge ") for c in rest), rest
    for command, runs in LONG_RUNNING.items():
        # Under `make test` the outer make's MAKEFLAGS/MAKELEVEL would make this one print
        # "Entering/Leaving directory" lines: run it as a user would, from a plain shell.
        env = {k: v for k, v in os.environ.items() if k not in MAKE_VARIABLES}
        dry = subprocess.run(
            [*command.split(), "-n"], cwd=ROOT, capture_output=True, text=True, check=False, env=env
        )
        assert dry.returncode == 0, dry.stderr
        recipe = [line for line in dry.stdout.splitlines() if not line.startswith("make")]
        assert recipe and runs in recipe[-1], dry.stdout
