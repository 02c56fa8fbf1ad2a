"""`docktor bench control`: the control-quality benchmark on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from docktor.config import ConfigError, load_config

# benchmarks/scenarios/ of the source tree this package lives in (an editable install or a
# checkout); the current directory's copy when run from elsewhere.
_HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios"
SCENARIO_SUFFIXES = (".yaml", ".yml")


def register(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench", help="benchmarks: how well policies control a simulated load (not tests)"
    )
    bench_commands = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    bench_commands.required = True
    control = bench_commands.add_parser(
        "control",
        help="simulate a JetStream work queue under each policy and compare backlog, waits "
        "and replica cost side by side",
        description="Runs every scenario under seed, keda-hpa, docktor-default, each "
        "--config service (config:<name>) and the oracle, in a deterministic fluid "
        "simulation that drives docktor's real policy code. Exit 2 on a bad file.",
    )
    control.add_argument(
        "--scenario",
        action="append",
        default=None,
        metavar="FILE",
        help="a scenario YAML file; repeat for several (default: every file in "
        "benchmarks/scenarios/)",
    )
    control.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a docktor.yaml: each of its services runs as policy config:<service>, with its "
        "own bounds and check_interval",
    )
    control.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    control.add_argument(
        "--plot",
        default=None,
        metavar="OUT.png",
        help="draw load, replicas and backlog over time (needs matplotlib: docktor[bench])",
    )
    control.set_defaults(handler=cmd_bench_control)


def default_scenarios() -> list[Path]:
    for folder in (_HERE, Path("benchmarks") / "scenarios"):
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix in SCENARIO_SUFFIXES)
            if files:
                return files
    raise ConfigError(["no scenario files found in benchmarks/scenarios/; pass --scenario FILE"])


def cmd_bench_control(args: argparse.Namespace) -> int:
    # Imported here so `docktor --help` and every other command stay as quick as before.
    from docktor.bench.report import print_tables, write_json
    from docktor.bench.runner import run_scenario
    from docktor.bench.scenario import load_scenario

    paths = [Path(p) for p in args.scenario] if args.scenario else default_scenarios()
    scenarios = [load_scenario(path) for path in paths]
    config = load_config(args.config) if args.config else None
    results = [run_scenario(scenario, config) for scenario in scenarios]
    print_tables(results)
    if args.json:
        write_json(results, Path(args.json))
        print(f"JSON: {args.json}")
    if args.plot:
        from docktor.bench.plot import write_plot

        write_plot(results, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0
