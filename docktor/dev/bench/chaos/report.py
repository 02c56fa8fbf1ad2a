"""A chaos run as a table, a live line and a picture: the controlled services' replicas and
backlog over time, the faults as a timeline beneath, and the decisions made per 10 s.

matplotlib is imported only for the plot (the `bench` extra); without it the plot is an SVG
drawn here by hand, plainer but with the same rows."""

from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any

from rich.table import Table

from docktor.dev.bench.chaos.plan import KINDS
from docktor.dev.bench.chaos.run import Progress

COLOURS = {
    "worker_kill": "#d62728",
    "workers_down": "#8c1a1a",
    "temporal_restart": "#9467bd",
    "nats_restart": "#1f77b4",
    "redis_restart": "#e377c2",
    "replica_kill": "#ff7f0e",
    "journal_unwritable": "#7f7f7f",
    "controls": "#2ca02c",
}


def live_table(progress: Progress) -> Table:
    now = time.time()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    elapsed = now - progress.began
    line = f"{progress.phase}, {elapsed:.0f}s"
    if progress.ends is not None:
        line += f" (ends in {max(0.0, progress.ends - now):.0f}s)"
    grid.add_row("chaos", line)
    faults = ", ".join(f"{k} {n}" for k, n in sorted(progress.faults.items())) or "none yet"
    grid.add_row("faults", faults)
    grid.add_row("down now", ", ".join(progress.active) or "-")
    if progress.next_fault:
        grid.add_row("next", progress.next_fault)
    style = "red" if progress.violations else "green"
    grid.add_row("violations", f"[{style}]{progress.violations}[/]")
    grid.add_row("decisions logged", str(progress.decisions))
    silent = progress.silent
    grid.add_row("silent loops", f"{len(silent)} {', '.join(silent[:4])}" if silent else "0")
    if progress.last is not None:
        for name, queue in progress.last.queues.items():
            backlog = "?" if queue.backlog is None else str(queue.backlog)
            grid.add_row(name, f"{progress.last.replicas.get(name, 0)} replicas, backlog {backlog}")
    return grid


def summary_table(report: dict[str, Any]) -> Table:
    silence = report["longest_silence_across_fault"]
    first = report["first_decision_after_restore"]
    settle = report["back_to_needed_count_after_fault"]
    table = Table(title=f"chaos: {report['violations_total']} invariant violations")
    for column in (
        "fault",
        "injected",
        "longest silence across it",
        "first decision after restore",
        "back to the needed count",
    ):
        table.add_column(column, justify="right" if column != "fault" else "left")
    for kind in KINDS:
        table.add_row(
            kind,
            str(report["faults_by_kind"].get(kind, 0)),
            _seconds(silence.get(kind)),
            _seconds(first.get(kind)),
            _seconds(settle.get(kind)),
        )
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


# ---- the plot -----------------------------------------------------------------------------------


def write_plot(report: dict[str, Any], path: Path) -> str:
    """PNG with matplotlib when it is installed, else SVG; returns the path written."""
    try:
        import matplotlib
    except ImportError:
        svg = path.with_suffix(".svg")
        svg.write_text(_svg(report))
        return str(svg)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = report["chaos_began"]
    samples = report["samples"]
    services = list(samples[0]["replicas"]) if samples else []
    rows = len(services) + 2
    figure, axes = plt.subplots(rows, 1, figsize=(16, 2.6 * rows), sharex=True, squeeze=False)
    t = [(s["at"] - start) / 60 for s in samples]
    for row, name in enumerate(services):
        axis = axes[row][0]
        axis.step(t, [s["replicas"][name] for s in samples], where="post", color="black")
        axis.set_ylabel("replicas")
        axis.set_title(f"{name}: replicas (black) and backlog (blue)", loc="left", fontsize=10)
        backlog = axis.twinx()
        backlog.plot(
            t,
            [
                s["backlog"].get(name) if s["backlog"].get(name) is not None else float("nan")
                for s in samples
            ],
            color="#1f77b4",
            linewidth=0.8,
        )
        backlog.set_ylabel("backlog")
        _shade(axis, report, start)
    timeline = axes[len(services)][0]
    for index, kind in enumerate(KINDS):
        spans = [
            ((f["started"] - start) / 60, max(f["ended"] - f["started"], 1.0) / 60)
            for f in report["faults"]
            if f["kind"] == kind
        ]
        timeline.broken_barh(spans, (index - 0.4, 0.8), color=COLOURS[kind])
    timeline.set_yticks(range(len(KINDS)), list(KINDS), fontsize=8)
    timeline.set_title("faults", loc="left", fontsize=10)
    for v in report["violations"]:
        timeline.axvline((v["at"] - start) / 60, color="red", linewidth=0.6)
    rate = axes[len(services) + 1][0]
    times = report["all_decision_times"]
    if times:
        bins = max(1, int((times[-1] - times[0]) / 10))
        rate.hist([(x - start) / 60 for x in times], bins=bins, color="#555555")
    rate.set_ylabel("per 10 s")
    rate.set_title("decisions made (from history)", loc="left", fontsize=10)
    _shade(rate, report, start)
    rate.set_xlabel("minutes since the faults began")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)


def _shade(axis: Any, report: dict[str, Any], start: float) -> None:
    for fault in report["faults"]:
        if fault["ended"] - fault["started"] >= 1.0:
            axis.axvspan(
                (fault["started"] - start) / 60,
                (fault["ended"] - start) / 60,
                color=COLOURS[fault["kind"]],
                alpha=0.15,
                linewidth=0,
            )
        else:
            axis.axvline((fault["started"] - start) / 60, color=COLOURS[fault["kind"]], alpha=0.5)


def _svg(report: dict[str, Any]) -> str:
    """The same rows, drawn plainly: one polyline per series, one bar per fault."""
    width, row = 1200, 160
    start, end = report["chaos_began"], report["ran_until"]
    span = max(1.0, end - start)
    samples = report["samples"]
    services = list(samples[0]["replicas"]) if samples else []
    parts = []

    def x(at: float) -> float:
        return 60 + (at - start) / span * (width - 80)

    for index, name in enumerate(services):
        top = 20 + index * row
        for key, colour in (("replicas", "black"), ("backlog", "#1f77b4")):
            values = [s[key].get(name) for s in samples]
            known = [v for v in values if v is not None] or [1]
            peak = max(known) or 1
            points = " ".join(
                f"{x(s['at']):.1f},{top + row - 20 - (v / peak) * (row - 40):.1f}"
                for s, v in zip(samples, values, strict=True)
                if v is not None and s["at"] >= start
            )
            parts.append(f'<polyline fill="none" stroke="{colour}" points="{points}"/>')
        parts.append(f'<text x="4" y="{top + 12}" font-size="12">{escape(name)}</text>')
    top = 20 + len(services) * row
    for index, kind in enumerate(KINDS):
        y = top + index * 16
        parts.append(f'<text x="4" y="{y + 11}" font-size="10">{kind}</text>')
        for fault in report["faults"]:
            if fault["kind"] == kind:
                w = max(2.0, x(fault["ended"]) - x(fault["started"]))
                parts.append(
                    f'<rect x="{x(fault["started"]):.1f}" y="{y}" width="{w:.1f}" height="12" '
                    f'fill="{COLOURS[kind]}"/>'
                )
    height = top + len(KINDS) * 16 + 20
    body = "\n".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">\n'
        f"{body}\n</svg>\n"
    )
