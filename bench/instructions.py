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

The webhook (``bench.webhook``) counts the same way, per request: ``webhook_bare`` (bare
aiohttp), ``webhook_inbox`` (the bridge taking requests into its SQLite inbox, delivery
held back) and ``webhook`` (the bridge, each event delivered to one no-op handler, the
ledger on). Each is a server process under callgrind with counting off until it serves;
counting is on only while this process sends ``--events`` requests (64 at a time) and,
for ``webhook``, until the inbox is drained: start-up is not counted, and one run is
enough (the load generator, in this process, is not counted either).

With ``--base``, the revision and this tree (uncommitted changes included) are each
checked out in a temporary worktree, and the two run in turns (two processes at a
time, one per core). Each run takes a minute or two (Python under callgrind is about
50 times slower). Needs ``valgrind`` (``make valgrind``). Writes ``bench/results/instructions.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
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
WEBHOOK = ("webhook_bare", "webhook_inbox", "webhook")
# The ratios, of rates: numerator / denominator.
_RATIOS = (
    ("ledger_off", "bare"),
    ("memory", "ledger_off"),
    ("sqlite", "ledger_off"),
    ("postgres", "ledger_off"),
    ("webhook", "webhook_bare"),
    ("webhook_inbox", "webhook_bare"),
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
    """Instructions per event: two sizes, start-up cancelled out (a webhook variant: per
    request, counted only while the requests are served)."""
    if variant in WEBHOOK:
        return webhook_count(tree, variant, events) / events
    small = events // 3
    big, little = pool.map(lambda n: count(tree, variant, n), (events, small))
    return (big - little) / (events - small)


def webhook_count(tree: Path, variant: str, requests: int) -> int:
    """Instructions callgrind counted in a webhook server of ``tree`` (``bench.webhook``'s
    bare server, or ``bridge run`` on its config) while it answered ``requests`` requests
    (and, for ``webhook``, delivered their events)."""
    from bench import webhook  # aiohttp and the bridge: only for these variants
    from bridge.server import wait_until_serving
    from tests.support import free_port

    scratch = Path(tempfile.mkdtemp(prefix="bench-webhook-"))
    port = free_port()
    out = scratch / "callgrind.out"
    db = scratch / "inbox.db"
    if variant == "webhook_bare":
        argv = ["-m", "bench.webhook", "--bare-server", str(port)]
    else:
        kind = "bridge" if variant == "webhook" else "bridge_inbox_only"
        config = scratch / "bridge.yaml"
        fill = webhook.VARIANTS[kind]
        config.write_text(webhook.CONFIG.format(db=db, secret=webhook.SECRET, **fill))
        argv = ["-m", "bridge", "run", "-c", str(config), "--listen", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
            *argv,
        ],
        cwd=scratch,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    control = ["callgrind_control"]
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(wait_until_serving(f"{url}/healthz", timeout=600))
        asyncio.run(_post(f"{url}/hooks/supabase", 200, 10**9))  # warm up, not counted
        subprocess.run([*control, "-i", "on", str(server.pid)], check=True, capture_output=True)
        accepted = asyncio.run(_post(f"{url}/hooks/supabase", requests, 0))
        if accepted != requests:
            raise RuntimeError(f"{variant}: {accepted} of {requests} requests accepted")
        if variant == "webhook":
            _drained(db)
        subprocess.run([*control, "-d", str(server.pid)], check=True, capture_output=True)
        subprocess.run([*control, "-i", "off", str(server.pid)], check=True, capture_output=True)
        dumps = [f for f in scratch.glob("callgrind.out*") if f.stat().st_size]
        return sum(_totals(f.read_text(errors="replace")) for f in dumps)
    finally:
        server.kill()
        server.wait(60)
        shutil.rmtree(scratch, ignore_errors=True)


_TOTALS = re.compile(r"^totals:\s*(\d+)", re.MULTILINE)


def _totals(dump: str) -> int:
    """The instructions of a callgrind dump (its ``totals:`` line; 0 if it has none)."""
    found = _TOTALS.search(dump)
    return int(found.group(1)) if found else 0


async def _post(url: str, requests: int, offset: int) -> int:
    """Send ``requests`` webhook requests, 64 at a time; how many were answered 202."""
    import aiohttp

    from bench.webhook import HEADERS, payload

    numbers = iter(range(offset, offset + requests))
    accepted = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def sender() -> None:
            nonlocal accepted
            for n in numbers:
                async with session.post(url, data=payload(n), headers=HEADERS) as answer:
                    await answer.read()
                    accepted += answer.status == 202

        await asyncio.gather(*(sender() for _ in range(64)))
    return accepted


def _drained(db: Path) -> None:
    """Wait until every inbox entry of ``db`` is done (its event delivered), then a
    second more for the writes behind the last settlements."""
    while True:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            (pending,) = conn.execute("SELECT COUNT(*) FROM inbox WHERE done_at IS NULL").fetchone()
        if not pending:
            break
        time.sleep(0.2)
    time.sleep(1.0)


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
    parser.add_argument("--variants", default=",".join((*VARIANTS, *WEBHOOK)))
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
        "unit": "instructions per event (callgrind, every thread of the bridge's process);"
        " webhook variants: per request",
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
