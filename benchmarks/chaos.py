"""A chaos soak: docktor under mixed faults for a while, and the invariants an operator relies on.

The embedded stack (Temporal dev server, nats-server, redis-server), two `python -m worker` on
one config, N loops (most of them idle `processes` services; one NATS and one Redis service with
the examples' real consumers, fed by the examples' producers with bursts). After a warm-up,
faults come at seeded random times: a worker SIGKILLed and restarted, both workers down, the
Temporal dev server restarted on its database, nats-server and redis-server restarted, a replica
SIGKILLed, the decision log's disk full for a while, and an operator's pause/scale/resume sent
in the middle of another fault. Then a calm tail, the loops are stopped, and the checks run:

- never more replicas than max_replicas, never one replica number twice (sampled every second);
- every decision in Temporal's history in the JSONL exactly once, as committed, in order;
- every loop decides again within --stuck-after of each fault's end, and is never silent longer;
- no scale-down on missing data;
- each controlled service back to the count its load needs after each fault.

    .venv/bin/python benchmarks/chaos.py --loops 50 --duration 30m --seed 1

A benchmark: it reports (a table, JSON, a plot) and exits 1 when an invariant was violated.
tests/faults/test_chaos.py runs a short version of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.live import Live

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docktor.dev.bench.chaos.plan import ChaosOptions, Load  # noqa: E402
from docktor.dev.bench.chaos.report import live_table, summary_table, write_plot  # noqa: E402
from docktor.dev.bench.chaos.run import Progress, run_chaos  # noqa: E402
from docktor.spec.primitives import parse_duration  # noqa: E402


def seconds(text: str) -> float:
    return float(parse_duration(text))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/chaos.py", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--loops", type=int, default=50, help="loops in all (2 of them controlled)")
    parser.add_argument("--duration", type=seconds, default=1800.0, help="the faults' phase (30m)")
    parser.add_argument("--seed", type=int, default=1, help="fault kinds, times and targets")
    parser.add_argument("--fault-every", type=seconds, default=60.0, help="mean gap between faults")
    parser.add_argument(
        "--fault-scale", type=float, default=1.0, help="multiplies how long each part stays down"
    )
    parser.add_argument("--interval", type=seconds, default=5.0, help="idle loops' check_interval")
    parser.add_argument("--stuck-after", type=seconds, default=60.0, help="a loop silent past this")
    parser.add_argument(
        "--load",
        default="60,200,10,60",
        help="each producer: rate, burst rate (msg/s), burst seconds, burst every (s)",
    )
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "chaos-results.json", help="write here"
    )
    parser.add_argument(
        "--plot", type=Path, default=REPO / "benchmarks" / "chaos.png", help="write the plot here"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (logs)")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rate, burst, burst_seconds, burst_every = (float(x) for x in args.load.split(","))
    options = ChaosOptions(
        loops=args.loops,
        duration=args.duration,
        seed=args.seed,
        fault_every=args.fault_every,
        fault_scale=args.fault_scale,
        idle_interval=args.interval,
        stuck_after=args.stuck_after,
        load=Load(rate, burst, burst_seconds, burst_every),
    )
    console = Console(stderr=True)
    folder = Path(tempfile.mkdtemp(prefix="docktor-chaos-"))
    try:
        with Live(console=console, refresh_per_second=2, transient=False) as live:

            def shown(progress: Progress) -> None:
                live.update(live_table(progress))

            report = await run_chaos(options, folder, shown)
        report["command"] = " ".join(["benchmarks/chaos.py", *(argv or sys.argv[1:])])
        Console().print(summary_table(report))
        for violation in report["violations"]:  # type: ignore[union-attr]
            print(
                f"violation: {violation['invariant']} {violation['service']}: {violation['detail']}"
            )
        for note in report["notes"]:  # type: ignore[union-attr]
            print(f"note: {note}")
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        written = write_plot(report, args.plot)
        console.log(f"wrote {args.json} and {written}")
    finally:
        if args.keep:
            console.log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 1 if report["violations_total"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
