"""Benchmark results as a terminal table (rich) and as JSON other tools can read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from docktor.dev.bench.metrics import Metrics
from docktor.dev.bench.runner import ScenarioResult


def oracle_distance(metrics: Metrics, oracle: Metrics | None) -> dict[str, float | None]:
    """How far a policy is from the oracle: extra backlog·s, and extra replica·s in %."""
    if oracle is None:
        return {"backlog_s_over_oracle": None, "replica_s_over_oracle_pct": None}
    extra_cost = None
    if oracle.replica_s > 0:
        extra_cost = round((metrics.replica_s / oracle.replica_s - 1) * 100, 1)
    return {
        "backlog_s_over_oracle": round(metrics.backlog_s - oracle.backlog_s, 3),
        "replica_s_over_oracle_pct": extra_cost,
    }


def to_json(results: list[ScenarioResult]) -> dict[str, Any]:
    scenarios = []
    for result in results:
        oracle = result.oracle()
        scenarios.append(
            {
                "name": result.scenario.name,
                "description": result.scenario.description,
                "duration": result.scenario.duration,
                "results": [{**m.as_dict(), **oracle_distance(m, oracle)} for m in result.metrics],
            }
        )
    return {"scenarios": scenarios}


def write_json(results: list[ScenarioResult], path: Path) -> None:
    path.write_text(json.dumps(to_json(results), indent=2) + "\n", encoding="utf-8")


def print_tables(results: list[ScenarioResult], console: Console | None = None) -> None:
    # Off a terminal rich assumes 80 columns and would wrap every cell; a wide table reads
    # better in a log or a pasted report.
    console = console or Console(width=None if Console().is_terminal else 160)
    for result in results:
        console.print(table(result))


def table(result: ScenarioResult) -> Table:
    scenario = result.scenario
    title = f"{scenario.name}, {scenario.duration:g} s"
    if scenario.description:
        title += f": {scenario.description}"
    out = Table(title=title, title_justify="left")
    out.add_column("policy", no_wrap=True)
    for heading in (
        "backlog·s",
        "peak backlog",
        "p95 wait s",
        "max wait s",
        "replica·s",
        "actions",
        "rise→up s",
        "backlog·s over oracle",
        "replica·s vs oracle",
    ):
        out.add_column(heading, justify="right", no_wrap=True)
    oracle = result.oracle()
    for m in result.metrics:
        out.add_row(
            m.policy,
            f"{m.backlog_s:,.0f}",
            f"{m.peak_backlog:,.0f}",
            f"{m.wait_p95_s:.1f}",
            f"{m.wait_max_s:.1f}",
            f"{m.replica_s:,.0f}",
            str(m.actions),
            _reaction(m),
            *_distance(m, oracle),
        )
    return out


def _reaction(m: Metrics) -> str:
    if m.rises == 0:
        return "-"
    if m.rise_to_scale_up_s is None:
        return f"none of {m.rises}"
    note = "" if m.rises_answered == m.rises else f" ({m.rises_answered}/{m.rises})"
    return f"{m.rise_to_scale_up_s:.1f}{note}"


def _distance(m: Metrics, oracle: Metrics | None) -> tuple[str, str]:
    if oracle is None or m is oracle:
        return "-", "-"
    gap = oracle_distance(m, oracle)
    cost = gap["replica_s_over_oracle_pct"]
    return f"{gap['backlog_s_over_oracle']:+,.0f}", "-" if cost is None else f"{cost:+.0f}%"
