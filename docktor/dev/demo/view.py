"""What `docktor demo` shows while it runs: a live panel per service (rich), or one plain line
per decision for CI logs and --no-live, and the summary at the end.

Nothing here starts or stops anything: the view reads the loops' statuses (handed in by the
stack) and the JSONL decision log, so it can be redrawn as often as the terminal likes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from docktor.journal import decision_key
from docktor.loop.messages import LoopStatus
from docktor.spec import format_number
from docktor.values import Decision

# How often the view (or the plain log) is brought up to date; rich redraws at the same pace.
REFRESH_SECONDS = 0.5
# A query answered by a busy worker can take a moment; past this the view shows the old value.
QUERY_TIMEOUT = 2.0
# Replica history kept for the live view's bar (one sample per refresh).
HISTORY = 60
BARS = " ▁▂▃▄▅▆▇█"


@dataclass
class ServiceView:
    name: str
    workflow_id: str
    ui_url: str
    status: LoopStatus | None = None
    history: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY))


@dataclass
class Journal:
    """Reads the JSONL decision log from where this demo started, one whole line at a time."""

    path: Path
    offset: int = 0
    partial: str = ""
    decisions: list[Decision] = field(default_factory=list)
    # Where each decision id's line sits in `decisions`: a decision decided again after a
    # crash is written again under its id, and the later line is the one that happened.
    places: dict[str, int] = field(default_factory=dict)

    def mark_start(self) -> None:
        # A reused state dir holds decisions of earlier demos; this run reports only its own.
        with contextlib.suppress(OSError):
            self.offset = self.path.stat().st_size

    def read_new(self) -> list[Decision]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return []
        self.offset += len(chunk)
        text = self.partial + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        # The record activity writes a line in one write(), but a read may still catch a file
        # mid-append: keep an unterminated tail for the next read.
        self.partial = lines.pop()
        new: list[Decision] = []
        for raw in lines:
            if not raw.strip():
                continue
            try:
                decision = Decision.model_validate_json(raw)
            except ValueError:
                continue
            new.append(decision)
            key = decision_key(decision)
            place = self.places.get(key)
            if place is None:
                self.places[key] = len(self.decisions)
                self.decisions.append(decision)
            else:
                self.decisions[place] = decision
        return new


def _metric(decision: Decision | None, name: str, rate: bool = False) -> str:
    if decision is None or name not in decision.observations:
        return "-"
    value = decision.observations[name]
    return f"{value:.1f}/s" if rate else format_number(value)


def _age(moment: datetime) -> str:
    seconds = max(0.0, (datetime.now(UTC) - moment).total_seconds())
    return f"{seconds:.0f}s ago"


def decision_line(decision: Decision) -> str:
    """One plain line per decision, for CI logs and --no-live."""
    stamp = decision.timestamp.astimezone().strftime("%H:%M:%S")
    return (
        f"{stamp} {decision.service:<12} {decision.action:<10} "
        f"{decision.current_replicas:>2} -> {decision.target_replicas:<2} "
        f"backlog={_metric(decision, 'queue.backlog')} "
        f"in={_metric(decision, 'queue.rate_in', rate=True)} "
        f"out={_metric(decision, 'queue.rate_out', rate=True)}  {decision.reason}"
    )


def _bar(history: Sequence[int], top: int) -> str:
    top = max(top, 1)
    return "".join(BARS[min(len(BARS) - 1, round(n * (len(BARS) - 1) / top))] for n in history)


def producer_phase(log: Path) -> str:
    """The producer's latest report line ("t=.. phase=burst target=500 msg/s ..."), if any."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 2048))
            lines = handle.read().decode("utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "phase=" in line:
            return " ".join(line.removeprefix("producer: ").split())
    return ""


def _panel(view: ServiceView) -> Panel:
    status = view.status
    last = status.last_decision if status else None
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if status is None:
        grid.add_row("replicas", "waiting for the loop's first answer...")
    else:
        replicas = "?" if status.replicas is None else str(status.replicas)
        grid.add_row(
            "replicas",
            Text.assemble(
                (f"{replicas:>2}", "bold green"),
                f"  (min {status.min_replicas}, max {status.max_replicas})  ",
                (_bar(view.history, status.max_replicas), "green"),
            ),
        )
    grid.add_row("backlog", _metric(last, "queue.backlog"))
    grid.add_row(
        "rate in / out",
        f"{_metric(last, 'queue.rate_in', True)} / {_metric(last, 'queue.rate_out', True)}",
    )
    if last is None:
        grid.add_row("last decision", "-")
    else:
        style = {"scale_up": "bold yellow", "scale_down": "bold cyan"}.get(last.action, "")
        grid.add_row(
            "last decision",
            Text.assemble(
                (last.action, style),
                f" {last.current_replicas} -> {last.target_replicas}, {_age(last.timestamp)}",
            ),
        )
        grid.add_row("why", last.reason)
    grid.add_row("Web UI", view.ui_url)
    return Panel(grid, title=f"[bold]{view.name}[/bold]", title_align="left")


def render(
    views: list[ServiceView], time_left: float, journal: Path, state_dir: Path, load: str
) -> RenderableType:
    parts: list[RenderableType] = [_panel(view) for view in views]
    footer = Table.grid(padding=(0, 2))
    footer.add_column(style="bold")
    footer.add_column()
    footer.add_row("time left", f"{max(0.0, time_left):.0f}s  (Ctrl-C stops everything now)")
    if load:
        footer.add_row("load", load)
    footer.add_row("decisions", str(journal))
    footer.add_row("logs", f"{state_dir}/*.log, {state_dir}/<service>/replica-*.log")
    parts.append(footer)
    return Group(*parts)


@dataclass
class LiveView:
    """Draws the loops while the demo runs: a rich panel per service redrawn twice a second on
    a terminal, else one plain line per new decision (CI logs, --no-live)."""

    views: list[ServiceView]
    journal: Journal
    state_dir: Path
    live: bool
    say: Callable[[str], None]
    console: Console = field(default_factory=Console)

    async def show(
        self,
        status: Callable[[str], Awaitable[LoopStatus]],
        end: float,
        stop: asyncio.Event,
        failed: Callable[[], bool],
        load: Callable[[], str],
    ) -> None:
        """Until the monotonic time `end`, `stop`, or `failed()`. `status(service)` queries a
        loop; `load()` is the producer's latest report."""

        def draw() -> RenderableType:
            time_left = end - time.monotonic()
            return render(self.views, time_left, self.journal.path, self.state_dir, load())

        async def tick() -> bool:
            await self._refresh(status)
            if failed() or stop.is_set() or time.monotonic() >= end:
                return False
            with contextlib.suppress(TimeoutError):
                wait = min(REFRESH_SECONDS, max(0.0, end - time.monotonic()))
                await asyncio.wait_for(stop.wait(), timeout=wait)
            return not stop.is_set() and time.monotonic() < end

        if not self.live:
            while await tick():
                pass
            return
        with Live(draw(), console=self.console, refresh_per_second=2, transient=False) as live:
            while await tick():
                live.update(draw())
            live.update(draw())

    async def _refresh(self, status: Callable[[str], Awaitable[LoopStatus]]) -> None:
        async def one(view: ServiceView) -> None:
            try:
                view.status = await asyncio.wait_for(status(view.name), QUERY_TIMEOUT)
            except Exception:
                # A query the worker could not answer in time: keep showing the last answer.
                return
            if view.status.replicas is not None:
                view.history.append(view.status.replicas)

        if self.live:
            await asyncio.gather(*(one(view) for view in self.views))
        for decision in self.journal.read_new():
            if not self.live:
                self.say(decision_line(decision))


def summary_lines(
    services: Iterable[str],
    decisions: list[Decision],
    journal: Path,
    logs: Iterable[str],
    replica_logs: Iterable[Path],
) -> list[str]:
    """The end-of-run report: per service its peak, its scaling actions and whether the loop
    ended with a `stopped` decision; then where the decisions and logs are."""
    lines = ["", "summary"]
    for service in services:
        mine = [d for d in decisions if d.service == service]
        peak = max((max(d.current_replicas, d.target_replicas) for d in mine), default=0)
        ups = sum(d.action == "scale_up" for d in mine)
        downs = sum(d.action == "scale_down" for d in mine)
        stopped = "yes" if any(d.action == "stopped" for d in mine) else "no"
        lines.append(
            f"  {service}: peak {peak} replicas, {ups} scale_up, {downs} scale_down, "
            f"{len(mine)} decisions, final stopped: {stopped}"
        )
    lines.append(f"  decisions: {journal}")
    lines.append(f"  logs:      {', '.join(logs)}")
    lines.extend(f"             {folder}/replica-*.log" for folder in replica_logs)
    return lines
