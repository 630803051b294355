"""docs/cli.md documents every flag of every command, so it stays complete."""

from __future__ import annotations

import argparse
import re

from bridge.app.cli import _parser
from bridge.settings import Settings
from tests.support import ROOT

DOC = (ROOT / "docs" / "cli.md").read_text()


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command of the parser with its path: ``("dlq", "list")``."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*path, name))
    return found


def section(path: tuple[str, ...]) -> str:
    """The text under the heading `` `bridge PATH` `` up to the next heading of any level."""
    heading = re.escape(" ".join(("bridge", *path)))
    match = re.search(rf"^#+ `{heading}`\n(.*?)(?=^#)", DOC + "\n#", re.M | re.S)
    assert match is not None, f"docs/cli.md has no section `bridge {' '.join(path)}`"
    return match.group(1)


def test_every_flag_of_every_command_is_in_its_section_of_docs_cli_md() -> None:
    missing = []
    documented = 0
    for path, parser in commands(_parser(Settings())):
        text = section(path) if path else DOC
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            if action.option_strings in (["-c", "--config"],):
                # One paragraph covers it for every command; the usage block names it per command.
                assert "`-c FILE`, `--config FILE`" in DOC
                continue
            names = action.option_strings or [action.metavar or action.dest.upper()]
            for name in names:
                documented += 1
                # A flag of the command itself (`bridge --version`) has a heading of its own.
                pattern = rf"`{re.escape(name)}[` ]" if path else rf"^#+ `bridge {name}`$"
                if not re.search(pattern, text, re.M):
                    missing.append(" ".join(("bridge", *path, name)))
    assert missing == []
    assert documented > 25  # the walk found the flags: it cannot pass by finding none


def test_every_flag_has_a_help_text() -> None:
    bare = [
        f"bridge {' '.join(path)} {action.option_strings or action.dest}"
        for path, parser in commands(_parser(Settings()))
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert bare == []


def test_the_usage_block_names_every_command() -> None:
    usage = DOC.split("```")[1]
    for path, _ in commands(_parser(Settings())):
        if path and path != ("dlq",):
            assert f"bridge {path[0]}" in usage
            assert all(word in usage for word in path)
