"""The JSONL decision log: one line per decision, appended, never duplicated."""

from __future__ import annotations

import json
import os
from pathlib import Path

from docktor.model import Decision

# How far back from the end of the file to look for a decision already written. An activity
# retry re-appends the same decision within moments, so the tail is where a duplicate would be.
_TAIL_BYTES = 256 * 1024


def decision_key(decision: Decision) -> str:
    """What tells a retried write of a decision from a new one. The sequence restarts at 1 when
    a loop is stopped and started again under the same workflow id, so the chain's first run id
    is part of the key (decisions made before it was recorded keep their old key)."""
    if decision.first_run_id:
        return f"{decision.workflow_id}#{decision.first_run_id}#{decision.sequence}"
    return f"{decision.workflow_id}#{decision.sequence}"


def decision_line(decision: Decision) -> dict[str, object]:
    """The seed-compatible fields first, then what docktor adds."""
    data = decision.model_dump(mode="json")
    data["decision_id"] = decision_key(decision)
    return data


def append_decision(path: str | Path, decision: Decision) -> bool:
    """Append the decision unless it is already in the log; True when a line was written."""
    journal = Path(path)
    journal.parent.mkdir(parents=True, exist_ok=True)
    key = decision_key(decision)
    if key in _recent_keys(journal):
        return False
    line = json.dumps(decision_line(decision), separators=(",", ":")) + "\n"
    # One write() of one line with O_APPEND, so concurrent loops never interleave their lines.
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return True


def read_decisions(path: str | Path) -> list[Decision]:
    journal = Path(path)
    if not journal.exists():
        return []
    decisions = []
    for raw in journal.read_text(encoding="utf-8").splitlines():
        if raw.strip():
            decisions.append(Decision.model_validate_json(raw))
    return decisions


def _recent_keys(journal: Path) -> set[str]:
    if not journal.exists():
        return set()
    with journal.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - _TAIL_BYTES))
        tail = handle.read().decode("utf-8", errors="replace")
    keys = set()
    for raw in tail.splitlines():
        try:
            keys.add(json.loads(raw).get("decision_id"))
        except (json.JSONDecodeError, AttributeError):
            continue
    return keys
