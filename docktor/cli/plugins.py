"""`docktor plugins`: the metric sources and backends installed, as the worker would find them.

Each row comes from one entry point (docktor.plugins): its name, the package and version that
provide it, and for a source the metrics it provides and whether a `queue:` block configures
it. A plugin whose class cannot be loaded is listed with the reason, and the command exits 1,
so a deployment check catches a broken install before a worker does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from docktor import plugins
from docktor.exits import EXIT_FAILED, EXIT_OK


def installed() -> dict[str, list[dict[str, Any]]]:
    """{"sources": [...], "backends": [...]}, each sorted by name."""
    sources = []
    for entry in plugins.registered(plugins.SOURCES).values():
        row: dict[str, Any] = _row(entry, "kind")
        try:
            cls = entry.load()
        except plugins.NotInstalled as exc:
            row["error"] = str(exc)
        else:
            row["queue"] = getattr(cls, "config_model", None) is not None
            row["metrics"] = list(getattr(cls, "provides", ()))
            row["rates"] = dict(getattr(cls, "rates", {}))
        sources.append(row)
    backends = []
    for entry in plugins.registered(plugins.BACKENDS).values():
        row = _row(entry, "name")
        try:
            entry.load()
        except plugins.NotInstalled as exc:
            row["error"] = str(exc)
        backends.append(row)
    return {"sources": sources, "backends": backends}


def _row(entry: plugins.Registered, key: str) -> dict[str, Any]:
    return {
        key: entry.name,
        "package": entry.package,
        "version": entry.version,
        "entry_point": entry.value,
    }


def render(found: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["metric sources (entry points docktor.metrics; a queue kind is set by queue.kind):"]
    lines += _table(
        ["KIND", "PACKAGE", "VERSION", "CONFIGURED BY", "METRICS"],
        [
            [
                s["kind"],
                s["package"],
                s["version"],
                *(
                    ["-", f"cannot load: {s['error']}"]
                    if "error" in s
                    else ["queue:" if s["queue"] else "the service", ", ".join(s["metrics"])]
                ),
            ]
            for s in found["sources"]
        ],
    )
    lines += ["", "backends (entry points docktor.scalers; set by backend:):"]
    lines += _table(
        ["NAME", "PACKAGE", "VERSION", ""],
        [
            [
                b["name"],
                b["package"],
                b["version"],
                f"cannot load: {b['error']}" if "error" in b else "",
            ]
            for b in found["backends"]
        ],
    )
    return "\n".join(line.rstrip() for line in lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["  (none installed)"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[-1]
        for r in [header, *rows]
    ]


def cmd_plugins(args: argparse.Namespace) -> int:
    found = installed()
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print(render(found))
    broken = any("error" in row for rows in found.values() for row in rows)
    if broken:
        print("error: a plugin cannot be loaded (see above)", file=sys.stderr)
    return EXIT_FAILED if broken else EXIT_OK


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plugins",
        help="list the installed metric sources and backends (entry points)",
        description="List the metric sources (entry-point group docktor.metrics) and backends "
        "(docktor.scalers) installed beside docktor: name, package, version, and the metrics a "
        "source provides. Exits 1 when one of them cannot be loaded. docs/plugins.md says how "
        "to write one.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=cmd_plugins)
