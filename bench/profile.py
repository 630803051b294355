"""A text profile (pyinstrument) of the bridge on the memory connector, 4 no-op handlers.

    python -m bench.profile sqlite            # -> bench/results/profiles/sqlite.txt
    python -m bench.profile ledger_off --events 6000 --out /tmp/p.txt

Variants as in ``bench.durable`` (``ledger_off``, ``sqlite``, ``postgres``). Only the
span from the bridge being ready to its last handler run is profiled, after a warm-up
run, so start-up and imports do not show.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from pyinstrument import Profiler

from bench.common import RESULTS, Env
from bench.durable import bridge_throughput
from bench.payload import body


async def profile(variant: str, events: int, interval: float) -> tuple[str, str]:
    """(header, text profile) of one run of ``events`` events after a warm-up."""
    bodies = [body(n) for n in range(events)]
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        env = Env(workdir=Path(tmp))
        await bridge_throughput(variant, env, bodies[:500])  # warm up
        profiler = Profiler(interval=interval, async_mode="disabled")
        profiler.start()
        tally = await bridge_throughput(variant, env, bodies)
        profiler.stop()
    header = (
        f"# {variant}: {events} events, memory connector, 4 no-op handlers;"
        f" {tally.rate(4):,.0f} events/s, {tally.cpu_us(4):.0f} µs CPU per event (under the"
        " profiler)\n"
    )
    return header, profiler.output_text(unicode=True, color=False, show_all=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("variant", choices=("ledger_off", "sqlite", "postgres"))
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--interval", type=float, default=0.0005, help="sampling interval (s)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or RESULTS / "profiles" / f"{args.variant}.txt"
    write_profile(out, *asyncio.run(profile(args.variant, args.events, args.interval)))


def write_profile(out: Path, header: str, text: str) -> None:
    """Write a profile under its header line to ``out`` and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + text)
    print(header.strip(), "->", out)


if __name__ == "__main__":
    main()
