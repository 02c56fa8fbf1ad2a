"""`docktor mcp` on the command line: its options, and the command that serves."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
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
        "--token-env",
        default=None,
        metavar="NAME",
        help="http: the environment variable holding the bearer token every request must carry "
        "(required when --host is beyond loopback)",
    )
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
    token, problem = http_token(args.transport, args.host, args.token_env, os.environ)
    if problem:
        from docktor.exits import EXIT_USAGE, error

        return error(f"docktor mcp: {problem}", EXIT_USAGE)
    # Imported only now: the SDK (and its web stack) is not loaded for the other commands.
    from docktor.mcp.server import Docktor, serve

    app = Docktor(config_path=path, address=args.address, allow_control=args.allow_control)
    serve(app, args.transport, args.host, args.port, token)
    return EXIT_OK


def http_token(
    transport: str, host: str, token_env: str | None, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """The bearer token the HTTP transport requires, or the one line saying why the server must
    not start. Beyond loopback a token is required: the tools (control ones included) would
    otherwise answer anyone who reaches the port. The token itself is never part of a message."""
    from docktor.mcp.auth import is_loopback

    if token_env is None:
        if transport == "http" and not is_loopback(host):
            return None, (
                f"--host {host} is beyond loopback: give a bearer token with --token-env NAME "
                "(an environment variable holding it), or listen on 127.0.0.1"
            )
        return None, None
    if transport != "http":
        return None, "--token-env applies to --transport http only (stdio has no requests)"
    token = environ.get(token_env, "").strip()
    if not token:
        return None, f"--token-env {token_env}: the variable is not set or is empty"
    return token, None
