"""How `docktor status` and `docktor explain` look: a rich table on a terminal, aligned plain
columns otherwise (pipes, logs, grep), and JSON for scripts.

Pure formatting: everything arrives as models from docktor/client/operate.py, and `now` is
passed in so that ages and countdowns are computed against one instant for the whole table.
A service's status is computed once, as a StatusView (status_view()); the table's cells, the
JSON and `docktor mcp` are all read from it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TextIO

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

from docktor.client.operate import ServiceState
from docktor.loop.messages import PendingApproval
from docktor.plan import ServicePlan
from docktor.spec import DocktorConfig, format_number
from docktor.values import Decision, ForecastView, ManualHold, Provenance

STATUS_HEADERS = [
    "SERVICE",
    "REPLICAS",
    "BOUNDS",
    "PAUSED",
    "LAST",
    "WHEN",
    "COOLDOWN",
    "HELD",
    "APPROVAL",
    "WORKFLOW",
    "REASON",
]
EXPLAIN_HEADERS = ["TIME (UTC)", "SERVICE", "ACTION", "CHANGE", "MODEL", "OBSERVED", "REASON"]
ACTION_STYLES = {
    "scale_up": "green",
    "scale_down": "yellow",
    "manual": "cyan",
    "expired": "magenta",
    "stopped": "red",
    "hold": "dim",
}


# ---- small pieces ----------------------------------------------------------------------------


def span(seconds: float) -> str:
    """12s, 3m05s, 2h10m: short enough for a table cell."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def seconds_until(moment: datetime | None, now: datetime) -> float | None:
    if moment is None:
        return None
    left = (moment - now).total_seconds()
    return left if left > 0 else None


def model_label(metadata: Provenance) -> str:
    """Which model shaped the decision: `rules`, `dmr ai/model`, or the rules after a
    model failed, with why."""
    named = " ".join(part for part in (metadata.provider, metadata.model) if part)
    if metadata.fallback:
        return f"rules (fallback from {named}: {metadata.fallback})"
    if metadata.provider == "none" or not metadata.llm_used:
        return "rules"
    return named


def mattered(decision: Decision, config: DocktorConfig | None = None) -> dict[str, float]:
    """The observations worth showing: the metrics the matched rules name, else those the
    service's rules look at. A decision can carry every metric a source returned; these are
    the ones that explain it."""
    observed = decision.observations
    # A matched rule reads `queue.backlog 812 > 500`: the metric is its first word.
    names = [rule.split()[0] for rule in decision.matched_rules if rule.split()]
    names = [name for name in dict.fromkeys(names) if name in observed]
    if not names and config is not None and decision.service in config.service_names():
        plan = ServicePlan.from_spec(config.service(decision.service))
        names = sorted(plan.metric_names() & observed.keys())
    return {name: observed[name] for name in names}


def _observed_text(values: dict[str, float]) -> str:
    return ", ".join(f"{name}={format_number(value)}" for name, value in values.items()) or "-"


# ---- status ----------------------------------------------------------------------------------


class StatusView(BaseModel):
    """One service's status as every interface shows it: a row of `docktor status` (table or
    plain columns), an element of `docktor status --json`, and `docktor mcp`'s service_status,
    status resource and control results. Built only by status_view(); the same keys on every
    row, null where there is no loop."""

    service: str
    workflow_id: str
    # True: the loop answered. False: no loop runs for the service. None: it could not be
    # asked or did not answer (Temporal unreachable, no worker); `problem` says which.
    running: bool | None
    problem: str | None = None
    replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    paused: bool | None = None
    pause_reason: str | None = None
    # Who paused (a user, or mcp:<client>), kept apart from the reason and shown once.
    paused_by: str | None = None
    iteration: int | None = None
    last_decision: Decision | None = None
    last_decision_age_s: float | None = None
    cooldown_up_left_s: float | None = None
    cooldown_down_left_s: float | None = None
    pending_approval: PendingApproval | None = None
    approval_expires_in_s: float | None = None
    # A manual scale's count the loop keeps until hold.until (docktor scale --hold).
    hold: ManualHold | None = None
    hold_left_s: float | None = None
    # Set while the loop's decisions cannot be written to the JSONL log (disk full, ...).
    journal_error: str | None = None


# What collect_status says of a service with no loop, as opposed to one that did not answer.
NOT_RUNNING = "not running"


def status_view(state: ServiceState, now: datetime) -> StatusView:
    """The one place a loop's answer (or its absence) becomes what is shown; ages and
    countdowns are against `now`, one instant for every row."""
    status = state.status
    if status is None:
        problem = state.problem or NOT_RUNNING
        return StatusView(
            service=state.service,
            workflow_id=state.workflow_id,
            running=False if problem == NOT_RUNNING else None,
            problem=problem,
        )
    last, pending, hold = status.last_decision, status.pending_approval, status.hold
    return StatusView(
        service=state.service,
        workflow_id=state.workflow_id,
        running=True,
        replicas=status.replicas,
        min_replicas=status.min_replicas,
        max_replicas=status.max_replicas,
        paused=status.paused,
        pause_reason=_own_reason(status.pause_reason, status.paused_by),
        paused_by=status.paused_by,
        iteration=status.iteration,
        last_decision=last,
        last_decision_age_s=_rounded((now - last.timestamp).total_seconds() if last else None),
        cooldown_up_left_s=_rounded(seconds_until(status.cooldown_up_until, now)),
        cooldown_down_left_s=_rounded(seconds_until(status.cooldown_down_until, now)),
        pending_approval=pending,
        approval_expires_in_s=_rounded(seconds_until(pending.expires_at, now) if pending else None),
        hold=hold,
        hold_left_s=_rounded(seconds_until(hold.until, now) if hold else None),
        journal_error=status.journal_error,
    )


def _own_reason(reason: str | None, by: str | None) -> str | None:
    """The pause's reason without its author: `docktor mcp` of earlier releases wrote
    "(by mcp:<client>)" into the reason as well, and a loop paused then keeps that text."""
    if reason and by and reason.endswith(f" (by {by})"):
        return reason[: -len(f" (by {by})")] or None
    return reason


def _paused_text(view: StatusView) -> str:
    if not view.paused:
        return "no"
    text = f"yes: {view.pause_reason}" if view.pause_reason else "yes"
    return f"{text} (by {view.paused_by})" if view.paused_by else text


def _detail_text(view: StatusView) -> str:
    """The last decision's reason, after what the operator must know first: decisions are
    not reaching the log."""
    reason = view.last_decision.reason if view.last_decision else ""
    if view.journal_error is None:
        return reason
    problem = f"decision log not written: {view.journal_error}"
    return f"{problem}; {reason}" if reason else problem


def _cooldown_text(view: StatusView) -> str:
    parts = [
        f"{direction} {span(left)}"
        for direction, left in (
            ("up", view.cooldown_up_left_s),
            ("down", view.cooldown_down_left_s),
        )
        if left is not None
    ]
    return ", ".join(parts) or "-"


def _held_text(view: StatusView) -> str:
    """A manual scale's hold: `3 until 14:03:12 UTC (4m10s)`."""
    hold, left = view.hold, view.hold_left_s
    if hold is None or left is None:
        return "-"
    return f"{hold.replicas} until {hold.until:%H:%M:%S} UTC ({span(left)})"


def _approval_text(view: StatusView) -> str:
    pending, left = view.pending_approval, view.approval_expires_in_s
    if pending is None:
        return "-"
    expires = f"expires in {span(left)}" if left is not None else "expiring"
    return f"{pending.current_replicas} -> {pending.target_replicas}, {expires}"


def status_cells(view: StatusView) -> list[str]:
    """One row, in STATUS_HEADERS order."""
    if not view.running:
        last = NOT_RUNNING if view.running is False else "no answer"
        detail = "" if view.running is False else view.problem or ""
        return [view.service, "-", "-", "-", last, "-", "-", "-", "-", view.workflow_id, detail]
    last = view.last_decision
    age = view.last_decision_age_s
    return [
        view.service,
        "?" if view.replicas is None else str(view.replicas),
        f"{view.min_replicas}..{view.max_replicas}",
        _paused_text(view),
        last.action if last else "-",
        f"{span(age)} ago" if age is not None else "-",
        _cooldown_text(view),
        _held_text(view),
        _approval_text(view),
        view.workflow_id,
        _detail_text(view),
    ]


def status_views(states: Sequence[ServiceState], now: datetime) -> list[StatusView]:
    return [status_view(state, now) for state in states]


def print_status(
    states: Sequence[ServiceState], now: datetime, out: TextIO, tty: bool, as_json: bool = False
) -> list[StatusView]:
    """Print the services' status; the views printed are returned, so that a caller judges
    (an exit code, say) from what the operator read."""
    shown = status_views(states, now)
    if as_json:
        # The same facts for scripts.
        rows = [view.model_dump(mode="json") for view in shown]
        out.write(json.dumps(rows, indent=2) + "\n")
        return shown
    cells = [status_cells(view) for view in shown]
    if tty:
        wrap = {"PAUSED", "HELD", "APPROVAL", "REASON"}
        table = _table("docktor status", STATUS_HEADERS, wrap=wrap)
        for row in cells:
            # Text, not markup: a reason such as "outside [1, 5]" must print as written.
            table.add_row(*(Text(cell) for cell in row), style="dim" if row[1] == "-" else None)
        Console(file=out).print(table)
        return shown
    out.write(columns(STATUS_HEADERS, cells))
    return shown


# ---- explain ---------------------------------------------------------------------------------


def explain_cells(decision: Decision, config: DocktorConfig | None) -> list[str]:
    """One row, in EXPLAIN_HEADERS order."""
    return [
        f"{decision.timestamp:%Y-%m-%d %H:%M:%S}",
        decision.service,
        # A scale-up taken ahead of load says so where the action is read.
        f"{decision.action} (predicted)" if decision.metadata.predicted else decision.action,
        f"{decision.current_replicas} -> {decision.target_replicas}",
        model_label(decision.metadata),
        _observed_text(mattered(decision, config)),
        decision.reason,
    ]


class ExplainedDecision(Decision):
    """A decision whole, plus what the table derives: `observed` (what mattered, in that
    order) and `model` (the label). `explain --json` and `docktor mcp` both give these."""

    observed: dict[str, float]
    model: str


def explained(decision: Decision, config: DocktorConfig | None) -> ExplainedDecision:
    return ExplainedDecision(
        **dict(decision),
        observed=mattered(decision, config),
        model=model_label(decision.metadata),
    )


def explain_json(decisions: Sequence[Decision], config: DocktorConfig | None) -> list[dict]:
    return [explained(decision, config).model_dump(mode="json") for decision in decisions]


def print_explain(
    decisions: Sequence[Decision],
    config: DocktorConfig | None,
    out: TextIO,
    tty: bool,
    as_json: bool = False,
) -> None:
    if as_json:
        out.write(json.dumps(explain_json(decisions, config), indent=2) + "\n")
        return
    if not decisions:
        out.write("no decisions recorded yet\n")
        return
    rows = [explain_cells(decision, config) for decision in decisions]
    if tty:
        table = _table("docktor explain", EXPLAIN_HEADERS, wrap={"MODEL", "OBSERVED", "REASON"})
        for row in rows:
            cells = [Text(cell) for cell in row]
            cells[2].stylize(ACTION_STYLES.get(row[2], ""))
            table.add_row(*cells)
        Console(file=out).print(table)
        return
    out.write(columns(EXPLAIN_HEADERS, rows))


def forecast_lines(learnt: ForecastView) -> list[str]:
    """`docktor forecast` as plain lines: what was learnt, and whether it is acted on."""
    lines = [f"service      {learnt.service}"]
    if not learnt.enabled:
        lines.append("predict      off (predict.enabled: false in the service's config)")
    if learnt.history_s:
        lines.append(
            f"history      {span(learnt.history_s)} of queue.rate_in ({learnt.state_bytes:,} bytes)"
        )
    if learnt.period_s is None:
        lines.append("period       none found yet")
        return lines
    acted = "pre-scaling" if learnt.trusted and learnt.enabled else "not acted on"
    lines.append(f"period       {span(learnt.period_s)} (seen {learnt.cycles} times in a row)")
    lines.append(
        f"confidence   {learnt.confidence:.2f} (needs {learnt.min_confidence:.2f} and "
        f"{learnt.min_cycles} cycles: {acted})"
    )
    if learnt.next_peak_at is not None and learnt.next_peak_rate is not None:
        lines.append(
            f"next peak    {learnt.next_peak_at:%Y-%m-%d %H:%M:%S} UTC, "
            f"{format_number(learnt.next_peak_rate)} msg/s (lead {span(learnt.lead_s)})"
        )
    return lines


def print_forecast(learnt: ForecastView, out: TextIO, as_json: bool = False) -> None:
    if as_json:
        out.write(json.dumps(learnt.model_dump(mode="json"), indent=2) + "\n")
        return
    out.write("\n".join(forecast_lines(learnt)) + "\n")


# ---- rich and plain tables -------------------------------------------------------------------


def _table(title: str, headers: Sequence[str], wrap: set[str]) -> Table:
    """Short cells (names, counts, times) never wrap; when the terminal is narrow, the long
    free-text columns give way instead."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for header in headers:
        if header in wrap:
            table.add_column(header, overflow="fold", ratio=2 if header == "REASON" else 1)
        else:
            table.add_column(header, no_wrap=True)
    return table


def columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, like `docker ps`; the last column (a reason,
    often long) is not padded, so a line is only as long as it needs to be."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
