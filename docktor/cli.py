"""The `docktor` command.

Every subcommand takes `--config` (default: $DOCKTOR_CONFIG or ./docktor.yaml). Exit codes:
0 success, 1 a runtime failure (a server that cannot be reached), 2 invalid usage or config.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from docktor.config import ConfigError, DocktorConfig, default_config_path, load_config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake: printed as one line, exit code 2."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help=f"the docktor.yaml to use (default: $DOCKTOR_CONFIG or {default_config_path()})",
    )


def read_config(path: str | None) -> DocktorConfig:
    return load_config(path)


# ---- docktor config validate -----------------------------------------------------------------


def cmd_config_validate(args: argparse.Namespace) -> int:
    config = read_config(args.config)
    services = ", ".join(f"{s.name} ({s.backend})" for s in config.services)
    print(f"OK  {args.config or default_config_path()}: project '{config.project}', {services}")
    if not args.offline:
        print(
            "note: online checks (streams, backends, LLM) are not implemented yet; "
            "only the file was checked"
        )
    return EXIT_OK


# ---- docktor dev / demo ----------------------------------------------------------------------


def cmd_dev(args: argparse.Namespace) -> int:
    from docktor.devstack import run_dev

    return run_dev(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from docktor.demo import run_demo

    return run_demo(args)


# ---- wiring ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docktor",
        description="docktor keeps each service's replica count right for its load.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    config = commands.add_parser("config", help="check and edit docktor.yaml")
    config_commands = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    config_commands.required = True
    validate = config_commands.add_parser(
        "validate", help="check a config file; exit 0 when valid, 2 with one line per problem"
    )
    add_config_option(validate)
    validate.add_argument(
        "--offline",
        action="store_true",
        help="check the file alone: no network, no Docker, no files it names",
    )
    validate.set_defaults(handler=cmd_config_validate)

    dev = commands.add_parser(
        "dev",
        help="run the embedded stack: Temporal dev server + Web UI, and nats-server if needed",
    )
    add_config_option(dev)
    dev.add_argument(
        "--state-dir",
        default=None,
        help="where the servers keep their data (default: the config's state_dir)",
    )
    dev.add_argument(
        "--temporal-port",
        type=int,
        default=None,
        help="Temporal API port (default: the port of temporal.address, 7233)",
    )
    dev.add_argument("--temporal-ui-port", type=int, default=8233, help="Web UI port")
    dev.add_argument(
        "--nats-port",
        type=int,
        default=None,
        help="NATS port (default: the port of the queue url, 4222)",
    )
    dev.add_argument("--nats-monitor-port", type=int, default=8222, help="NATS monitoring port")
    dev.set_defaults(handler=cmd_dev)

    demo = commands.add_parser(
        "demo",
        help="run the NATS example end to end on the embedded stack, with a live view",
    )
    add_config_option(demo)
    demo.add_argument(
        "--duration",
        type=float,
        default=180.0,
        metavar="S",
        help="seconds to run before stopping everything (default 180)",
    )
    demo.add_argument(
        "--state-dir",
        default=None,
        help="where the servers and replicas keep state (default: a new temp dir)",
    )
    demo.add_argument(
        "--no-live",
        action="store_true",
        help="print one line per decision instead of the live view",
    )
    demo.add_argument(
        "--producer-args",
        default=None,
        metavar="ARGS",
        help="extra flags for the example producer, appended after the demo's own, e.g. "
        "'--rate 50 --burst-every 30' (see examples/nats-multi/producer.py --help)",
    )
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        code = handler(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        code = EXIT_USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def entry() -> None:
    # temporalio/sdk-python#300: leave without the interpreter's finaliser once all is done.
    os._exit(main())


if __name__ == "__main__":
    entry()
