"""`docktor mcp` on the command line: its options, and the command that serves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`docktor mcp`, wired like the other subcommands."""
    from docktor.cli.options import add_config_option

    parser = commands.add_parser(
        "mcp",
        help="serve docktor's operations as MCP tools for AI agents (stdio or streamable HTTP)",
        description="An MCP server with read-only tools (list_services, service_status, "
        "explain_decisions, observe_now, what_if, validate_config), the resources "
        "docktor://services/{name}/status and /decisions, and the investigate-scaling prompt. "
        "Control tools only with --allow-control.",
    )
    add_config_option(parser)
    parser.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="the Temporal server (default: temporal.address of the config)",
    )
    parser.add_argument(
        "--transport",
        choices=["stdio", "http"],
        default="stdio",
        help="stdio (default; what desktop clients launch) or http (streamable HTTP at /mcp)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="http: the address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8765, help="http: the port (default 8765)")
    parser.add_argument(
        "--allow-control",
        action="store_true",
        help="also offer pause, resume, scale_to, nudge, approve and reject",
    )
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    from docktor.exits import EXIT_OK, read_config
    from docktor.spec import default_config_path

    path = Path(args.config) if args.config else default_config_path()
    read_config(path)  # refuse an invalid file before a client connects (exit 2, one line each)
    if args.transport == "http" and args.host not in ("127.0.0.1", "localhost", "::1"):
        # The HTTP transport has no authentication: say so where the operator will see it.
        print(
            f"warning: docktor mcp listens on {args.host}: anyone who reaches it can use "
            f"its tools{' (control included)' if args.allow_control else ''}",
            file=sys.stderr,
        )
    # Imported only now: the SDK (and its web stack) is not loaded for the other commands.
    from docktor.mcp.server import Docktor, serve

    app = Docktor(config_path=path, address=args.address, allow_control=args.allow_control)
    serve(app, args.transport, args.host, args.port)
    return EXIT_OK
