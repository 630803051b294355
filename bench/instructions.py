"""Instructions per event on the durable path, counted by valgrind's callgrind: a figure
that does not move with the machine's load, for deciding whether a change helped.

Rates and CPU time on a shared 2-core host move by a tenth or more between runs of
the same code (see docs/performance.md); a change worth a few percent cannot be seen
in them. The instructions a process executes barely move: each variant of
``bench.ledger`` (4 no-op handlers on the memory connector) runs under callgrind at
two sizes, and the difference over the difference of events is its instructions per
event, start-up and imports excluded. Every thread of the process is counted (the
SQLite store's thread too); PostgreSQL's own processes are not.

    python -m bench.instructions                        # this tree, every variant
    python -m bench.instructions --base HEAD~3          # this tree against a revision
    python -m bench.instructions --variants sqlite --runs 5 --events 3000

With ``--base``, the revision and this tree (uncommitted changes included) are each
checked out in a temporary worktree, and the two run in turns (two processes at a
time, one per core). Each run takes a minute or two (Python under callgrind is about
50 times slower). Needs ``valgrind`` (``make valgrind``). Writes ``bench/results/instructions.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import RESULTS

VARIANTS = ("bare", "ledger_off", "memory", "sqlite", "postgres")
# The ratios, of rates: numerator / denominator.
_RATIOS = (
    ("ledger_off", "bare"),
    ("memory", "ledger_off"),
    ("sqlite", "ledger_off"),
    ("postgres", "ledger_off"),
)
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


# One run of a variant, in the tree it is started in (a base revision may not have this
# module): ``python -c`` puts the working directory first on the path.
_CHILD = """
import asyncio, shutil, sys, tempfile
from bench.ledger import one
from bench.payload import body
from bridge.app.runtime import tune_gc

class Where:
    workdir = tempfile.mkdtemp(prefix="bench-instructions-")

async def main(variant, events):
    await one(variant, Where, [body(n) for n in range(events)])

tune_gc()
try:
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
finally:
    shutil.rmtree(Where.workdir, ignore_errors=True)
"""


def count(tree: Path, variant: str, events: int) -> int:
    """Instructions callgrind counted for one run of ``variant`` in ``tree``."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _CHILD,
            variant,
            str(events),
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{variant} in {tree} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_event(tree: Path, variant: str, events: int, pool: ThreadPoolExecutor) -> float:
    """Instructions per event: two sizes, start-up cancelled out."""
    small = events // 3
    big, little = pool.map(lambda n: count(tree, variant, n), (events, small))
    return (big - little) / (events - small)


def compile_tree(tree: Path) -> None:
    """Byte-compile first: a module compiled during a counted run would add to it."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "bridge", "connectors", "bench", "tests"],
        cwd=tree,
        capture_output=True,
        check=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--base", help="a git revision to compare this tree with")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed: make valgrind")
    trees = {"this": Path.cwd()}
    scratch = None
    if args.base:
        # Both sides from fresh checkouts: this tree's own directory counted up to 7,000
        # instructions an event more than a fresh checkout of the same commit (memory
        # store; two fresh checkouts agree within 1,000). This side is the working tree
        # as it is, uncommitted changes included (``git stash create``: HEAD if none).
        scratch = Path(tempfile.mkdtemp(prefix="bench-trees-"))
        made = subprocess.run(["git", "stash", "create"], capture_output=True, text=True)
        this = made.stdout.strip() or "HEAD"
        for name, rev in (("this", this), ("base", args.base)):
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(scratch / name), rev],
                check=True,
                capture_output=True,
            )
            trees[name] = scratch / name
    try:
        for tree in trees.values():
            compile_tree(tree)
        variants = [v for v in args.variants.split(",") if v]
        found: dict[str, dict[str, list[float]]] = {t: {v: [] for v in variants} for t in trees}
        started = time.time()
        with ThreadPoolExecutor(2) as pool:
            for run in range(args.runs):
                for variant in variants:
                    for name, tree in trees.items():
                        found[name][variant].append(per_event(tree, variant, args.events, pool))
                        print(
                            f"  run {run + 1} {name} {variant}: "
                            f"{found[name][variant][-1]:,.0f} instructions an event",
                            flush=True,
                        )
        result = report(found, args, time.time() - started)
    finally:
        if scratch is not None:
            for tree in trees.values():
                if tree.parent == scratch:
                    subprocess.run(
                        ["git", "worktree", "remove", "--force", str(tree)],
                        check=False,
                        capture_output=True,
                    )
            shutil.rmtree(scratch, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "instructions.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def report(
    found: dict[str, dict[str, list[float]]], args: argparse.Namespace, seconds: float
) -> dict[str, Any]:
    """Medians per variant, the issue's ratios on them, and the change against the base."""
    medians = {t: {v: statistics.median(xs) for v, xs in vs.items()} for t, vs in found.items()}
    ratios: dict[str, dict[str, float]] = {}
    for tree, m in medians.items():
        # events/s goes as 1 / instructions: a ratio of rates is the inverse ratio here
        ratios[tree] = {f"{a}/{b}": m[b] / m[a] for a, b in _RATIOS if a in m and b in m}
    out: dict[str, Any] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "unit": "instructions per event (callgrind, every thread of the bridge's process)",
        "events": args.events,
        "runs": args.runs,
        "seconds": round(seconds, 1),
        "base": args.base,
        "instructions_per_event": medians,
        "runs_per_event": found,
        "ratios": ratios,
    }
    if "base" in medians:
        out["change"] = {
            v: medians["this"][v] - medians["base"][v]
            for v in medians["this"]
            if v in medians["base"]
        }
        for v, d in out["change"].items():
            print(f"  {v}: {d:+,.0f} instructions an event ({d / medians['base'][v]:+.1%})")
    for tree, r in ratios.items():
        print(f"  {tree}: " + ", ".join(f"{k} {x:.3f}" for k, x in r.items()))
    return out


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
