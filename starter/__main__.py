"""`python -m starter --service consumer`: start (or stop) a service's scaling loop.

Starting is idempotent: a loop that is already running is left in place and handed the config
as it is now; a running loop that does not take it within --timeout (no worker serves it) is an
error, and being void by then, the update is never applied later.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from temporalio.service import RPCError

from docktor.cli.options import positive_seconds
from docktor.client.loops import (
    START_TIMEOUT,
    UPDATE_TIMEOUT,
    ControlRefused,
    LoopClient,
    LoopNotAnswering,
    NoRunningLoop,
)
from docktor.client.temporal import TemporalUnreachable, connect, ui_url
from docktor.dev.stack import recorded_ui_url
from docktor.exits import (
    EXIT_OK,
    EXIT_USAGE,
    error,
    interrupted,
    leave,
    read_config,
    report_config_error,
)
from docktor.exits import run as run_async
from docktor.spec import ConfigError, DocktorConfig, default_config_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m starter",
        description="Start a service's docktor loop (a Temporal workflow), or stop it.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--service", help="the service to start or stop (a name in the config)")
    which.add_argument("--all", action="store_true", help="every service in the config")
    parser.add_argument("--stop", action="store_true", help="cancel the loop(s) instead")
    parser.add_argument(
        "--config",
        default=None,
        help=f"docktor.yaml to read (default: $DOCKTOR_CONFIG or {default_config_path()})",
    )
    parser.add_argument("--address", default=None, help="Temporal address (overrides config)")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        metavar="S",
        help=f"seconds to wait for each loop: for a running loop to take the config "
        f"(default {START_TIMEOUT:g}; not taken by then, it never is), or with --stop for its "
        f"final decision (default {UPDATE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--ui",
        default=os.environ.get("TEMPORAL_UI_URL"),
        help="Web UI base URL for the links (default: $TEMPORAL_UI_URL, else the UI of the "
        "`docktor dev` serving this Temporal, else the API port + 1000)",
    )
    return parser.parse_args(argv)


# Loops started or stopped at once by --all: one round trip each, so 200 services took 54 s one
# by one; a bounded number in flight keeps a small server from being swamped.
CONCURRENT = 16


async def run(args: argparse.Namespace, config: DocktorConfig, names: list[str]) -> int:
    loops = LoopClient(await connect(config, args.address), config)
    # The UI of the `docktor dev` serving this Temporal, wherever it is; else the dev server's
    # default place.
    ui = args.ui or recorded_ui_url(config, args.address)
    slots = asyncio.Semaphore(CONCURRENT)

    async def one(name: str) -> tuple[list[str], list[str]]:
        async with slots:
            return await _start_or_stop(loops, args, name, ui)

    code = EXIT_OK
    # Reported in the config's order, whatever order they finished in.
    for out, problems in await asyncio.gather(*(one(name) for name in names)):
        for line in out:
            print(line)
        for problem in problems:
            code = error(problem)
    return code


async def _start_or_stop(
    loops: LoopClient, args: argparse.Namespace, name: str, ui: str | None
) -> tuple[list[str], list[str]]:
    """What to print for one service: (stdout lines, errors)."""
    config = loops.config
    workflow_id = config.workflow_id(name)
    if args.stop:
        try:
            status = await loops.stop(name, timeout=args.timeout or UPDATE_TIMEOUT)
        except NoRunningLoop as exc:
            return [f"{name}: {exc}"], []
        except LoopNotAnswering as exc:
            return [], [f"{name}: {exc}"]
        except RPCError as exc:
            return [], [f"{name}: Temporal refused the call: {exc.message}"]
        return [f"{name}: stopped {workflow_id} at {status.replicas} replicas"], []
    try:
        result = await loops.start(config.service(name), timeout=args.timeout or START_TIMEOUT)
    except LoopNotAnswering as exc:
        return [], [f"{name}: {exc}"]
    except ControlRefused as exc:
        return [], [f"{name}: {workflow_id} is running and refused the config: {exc}"]
    except RPCError as exc:
        return [], [f"{name}: Temporal refused the call: {exc.message}"]
    verb = "started" if result.started else "already running; config updated in place:"
    link = ui_url(config, workflow_id, ui, args.address)
    return [f"{name}: {verb} {workflow_id}", f"  Web UI: {link}"], []


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return interrupted()


def _main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = read_config(args.config)
    except ConfigError as exc:
        return report_config_error(exc)
    if args.all:
        names = config.service_names()
    elif args.service not in config.service_names():
        return error(
            f"no service '{args.service}' in the config; "
            f"services: {', '.join(config.service_names())}",
            EXIT_USAGE,
        )
    else:
        names = [args.service]
    try:
        return run_async(run(args, config, names))
    except ConfigError as exc:  # the connection's settings: a profile, a certificate, a key
        return report_config_error(exc)
    except TemporalUnreachable as exc:
        return error(exc)


if __name__ == "__main__":
    leave(main())
