"""What the Web UI shows of a loop without a query: its recent decisions as a table.

The workflow's "current details" (user metadata the UI renders as markdown on the run's page)
hold the last decisions the loop keeps, so the page of its latest run answers "what has this
loop done lately" across continue-as-new. Pure text: no secret is in a decision, and every cell
is bounded and one line, so the table stays small and cannot break out of its markdown.
"""

from __future__ import annotations

from collections.abc import Sequence

from docktor.text import printable_line
from docktor.values import Decision

# Rows shown, newest first, and characters of a reason in a cell.
ROWS = 15
REASON_CHARS = 140


def decisions_table(decisions: Sequence[Decision], heading: str = "Recent decisions") -> str:
    """A markdown table of the newest `ROWS` decisions, newest first."""
    if not decisions:
        return f"**{heading}**: none yet"
    lines = [
        f"**{heading}** (newest first, times UTC)",
        "",
        "| time | action | replicas | reason |",
        "|---|---|---|---|",
    ]
    for decision in reversed(decisions[-ROWS:]):
        change = f"{decision.current_replicas} → {decision.target_replicas}"
        lines.append(
            f"| {decision.timestamp:%H:%M:%S} | {decision.action} | {change} "
            f"| {_cell(decision.reason)} |"
        )
    return "\n".join(lines)


def record_summary(decision: Decision, reason_chars: int = 100) -> str:
    """The `record` step's summary in the history (the UI shows it after the activity's name,
    `record`): what happened, with counts and why."""
    return (
        f"{decision.action} {decision.current_replicas} -> {decision.target_replicas}: "
        f"{printable_line(decision.reason, reason_chars)}"
    )


def _cell(text: str) -> str:
    # A `|` would end the cell; a backslash-escaped one reads as the character.
    return printable_line(text, REASON_CHARS).replace("\\", "\\\\").replace("|", "\\|")
