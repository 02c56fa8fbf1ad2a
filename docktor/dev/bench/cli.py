"""`docktor bench control`: the control-quality benchmark on the command line."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from docktor.exits import read_config
from docktor.spec import ConfigError

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
        description="Runs every scenario under seed, keda-hpa (KEDA + HPA as a ScaledObject "
        "runs by default), keda-hpa-cached (useCachedMetrics), hpa-behavior (the HPA's default "
        "behavior), docktor-default, "
        "docktor-predict (cold and warm-started), each --config service (config:<name>) and "
        "the oracle, in a deterministic fluid simulation that drives docktor's real policy "
        "code. Exit 2 on a bad file.",
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
        action="append",
        default=None,
        metavar="FILE",
        help="a docktor.yaml: each of its services runs as policy config:<service>, with its "
        "own bounds and check_interval; repeat to compare several (e.g. before and after)",
    )
    control.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    control.add_argument(
        "--plot",
        default=None,
        metavar="OUT.png",
        help="draw load, replicas and backlog over time (needs matplotlib: docktor[bench])",
    )
    control.set_defaults(handler=cmd_bench_control)

    live = bench_commands.add_parser(
        "live",
        help="run the example's bursts on the real embedded stack and compare what happened "
        "with what the simulation predicts for the same config",
        description="Starts Temporal, NATS, the worker, the producer and the service's loop "
        "(as `docktor demo` does), measures backlog·s, peak backlog, replica·s and scaling "
        "actions from NATS and the decision log, then simulates the same service under the "
        "same load and prints both side by side. Everything started is stopped at the end.",
    )
    live.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a docktor.yaml with a NATS queue service (default: the nats-multi example)",
    )
    live.add_argument("--service", default=None, metavar="NAME", help="default: the first one")
    live.add_argument(
        "--duration", type=float, default=600.0, metavar="S", help="seconds (default 600)"
    )
    live.add_argument("--rate", type=float, default=100.0, help="baseline msg/s (default 100)")
    live.add_argument(
        "--burst-rate", type=float, default=500.0, help="msg/s in a burst (default 500)"
    )
    live.add_argument("--burst-seconds", type=float, default=10.0, help="burst length (default 10)")
    live.add_argument(
        "--burst-every",
        type=float,
        default=60.0,
        help="one burst at the end of every this many seconds (default 60)",
    )
    live.add_argument(
        "--per-replica-rate",
        type=float,
        default=None,
        metavar="MSG_S",
        help="msg/s one replica handles, for the simulation (default: measured in the run)",
    )
    live.add_argument(
        "--startup",
        type=float,
        default=None,
        metavar="S",
        help="seconds from starting a replica to its first fetch, for the simulation "
        "(default: measured from the replicas' logs)",
    )
    live.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    live.add_argument(
        "--state-dir", default=None, help="where servers and replicas keep state (default: temp)"
    )
    live.set_defaults(handler=cmd_bench_live)


def default_scenarios() -> list[Path]:
    for folder in (_HERE, Path("benchmarks") / "scenarios"):
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix in SCENARIO_SUFFIXES)
            if files:
                return files
    raise ConfigError(["no scenario files found in benchmarks/scenarios/; pass --scenario FILE"])


def cmd_bench_control(args: argparse.Namespace) -> int:
    # Imported here so `docktor --help` and every other command stay as quick as before.
    from docktor.dev.bench.report import print_tables, write_json
    from docktor.dev.bench.runner import run_scenario
    from docktor.dev.bench.scenario import load_scenario

    paths = [Path(p) for p in args.scenario] if args.scenario else default_scenarios()
    scenarios = [load_scenario(path) for path in paths]
    configs = [read_config(path) for path in args.config or []]
    names = [f"config:{s.name}" for c in configs for s in c.services]
    if duplicated := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError([f"--config: service names must differ across files: {duplicated}"])
    results = [run_scenario(scenario, configs) for scenario in scenarios]
    print_tables(results)
    if args.json:
        write_json(results, Path(args.json))
        print(f"JSON: {args.json}")
    if args.plot:
        from docktor.dev.bench.plot import write_plot

        write_plot(results, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


def cmd_bench_live(args: argparse.Namespace) -> int:
    from docktor.dev.bench.live import LiveBench
    from docktor.dev.demo.stack import resolve_config_path

    for name in ("duration", "rate", "burst_every"):
        if getattr(args, name) <= 0:
            raise ConfigError([f"--{name.replace('_', '-')}: must be greater than 0"])
    if not 0 < args.burst_seconds < args.burst_every:
        raise ConfigError(["--burst-seconds: must be greater than 0 and less than --burst-every"])
    config_path = resolve_config_path(args.config)
    config = read_config(config_path)
    args.no_live = True
    bench = LiveBench(args, config_path, config)
    if bench.spec.queue is None or bench.spec.queue.kind != "nats":
        raise ConfigError([f"--service: '{bench.spec.name}' has no NATS queue to measure"])
    return asyncio.run(bench.run())
