"""The demo's reader of the decision log keeps, for each decision, the line that happened."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from docktor.dev.demo.view import Journal
from docktor.journal import append_decision
from docktor.values import Decision


def _decision(sequence: int, action: str, target: int) -> Decision:
    return Decision(
        timestamp=datetime(2026, 12, 7, 12, 0, sequence, tzinfo=UTC),
        service="consumer",
        action=action,  # type: ignore[arg-type]
        current_replicas=2,
        target_replicas=target,
        reason=f"{action} at {sequence}",
        sequence=sequence,
        workflow_id="docktor:default:consumer",
        first_run_id="run-1",
    )


def test_a_decision_written_again_under_its_id_replaces_the_earlier_line(tmp_path: Path) -> None:
    log = tmp_path / "decisions.jsonl"
    journal = Journal(log)
    append_decision(log, _decision(1, "hold", 2))
    append_decision(log, _decision(2, "hold", 2))
    assert [d.action for d in journal.read_new()] == ["hold", "hold"]

    # The task that made decision 2 failed to complete; decided again, it scaled up.
    append_decision(log, _decision(2, "scale_up", 4))
    append_decision(log, _decision(3, "hold", 4))
    assert [d.action for d in journal.read_new()] == ["scale_up", "hold"]

    assert [(d.sequence, d.action) for d in journal.decisions] == [
        (1, "hold"),
        (2, "scale_up"),
        (3, "hold"),
    ]
