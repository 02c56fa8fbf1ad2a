"""How long the processes backend takes to stop N replicas that ignore SIGTERM.

Each replica sits out its whole grace period and is then SIGKILLed; stops run concurrently, so
stopping N should take about one grace period, not N. Run:

    .venv/bin/python benchmarks/scale_down.py [--grace 1.0] [--counts 1 2 4 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from docktor.backends.processes import ProcessScaler
from docktor.spec import ServiceSpec

# Ignores SIGTERM, so every stop lasts the full grace period.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


async def measure(count: int, grace: float, state: Path) -> float:
    spec = ServiceSpec(
        name=f"bench{count}",
        backend="processes",
        command=[sys.executable, "-c", STUBBORN],
        state_dir=str(state / str(count)),
        stop_grace_period=grace,
    )
    scaler = ProcessScaler(spec, project="bench")
    await scaler.scale_to(count)
    # Let the replicas install their handler before they are asked to stop.
    await asyncio.sleep(0.5)
    started = time.perf_counter()
    await scaler.scale_to(0)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grace", type=float, default=1.0)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'replicas':>8}  {'seconds':>8}  {'grace periods':>13}")
        for count in args.counts:
            seconds = await measure(count, args.grace, Path(tmp))
            print(f"{count:>8}  {seconds:>8.2f}  {seconds / args.grace:>13.2f}")


if __name__ == "__main__":
    asyncio.run(main())
