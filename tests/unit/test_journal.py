"""The decision log's idempotency key: a retry of one decision is written once, the same
sequence number in another chain of runs (a loop stopped and started again) is a new line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from docktor import journal as journal_module
from docktor.journal import (
    append_decision,
    decision_key,
    latest_decisions,
    logged_samples,
    read_decisions,
    read_journal,
)
from docktor.values import Decision


def _decision(**fields: object) -> Decision:
    base: dict[str, object] = {
        "timestamp": datetime(2025, 1, 1, tzinfo=UTC),
        "service": "consumer",
        "action": "hold",
        "current_replicas": 1,
        "target_replicas": 1,
        "reason": "r",
        "workflow_id": "docktor-shop-consumer",
        "sequence": 1,
    }
    return Decision.model_validate({**base, **fields})


def test_same_sequence_in_two_chains_is_two_lines_and_a_retry_is_none(tmp_path: Path) -> None:
    journal = tmp_path / "decisions.jsonl"
    first, second = _decision(first_run_id="run-a"), _decision(first_run_id="run-b")
    assert append_decision(journal, first)
    assert not append_decision(journal, first)  # a retried record activity
    assert append_decision(journal, second)
    assert [d.first_run_id for d in read_decisions(journal)] == ["run-a", "run-b"]


def test_a_decision_from_before_the_chain_id_decodes_with_its_old_key() -> None:
    old = '{"timestamp": "2025-01-01T00:00:00Z", "service": "consumer", "action": "hold",'
    old += ' "current_replicas": 1, "target_replicas": 1, "reason": "r",'
    old += ' "workflow_id": "docktor-shop-consumer", "sequence": 7}'
    decision = Decision.model_validate_json(old)
    assert decision.first_run_id == ""
    assert decision_key(decision) == "docktor-shop-consumer#7"


def test_a_line_another_process_appended_counts_as_written(tmp_path: Path) -> None:
    """The duplicate check reads only what was appended since it last looked, whoever wrote it
    (a second worker on the same log, or this one before a restart)."""
    journal = tmp_path / "decisions.jsonl"
    assert append_decision(journal, _decision(sequence=1))
    other = tmp_path / "other.jsonl"
    append_decision(other, _decision(sequence=2))
    with journal.open("a") as handle:  # as another process would, behind this one's back
        handle.write(other.read_text())
    assert not append_decision(journal, _decision(sequence=2))
    assert append_decision(journal, _decision(sequence=3))
    assert [d.sequence for d in read_decisions(journal)] == [1, 2, 3]


def test_a_log_replaced_or_truncated_is_read_again(tmp_path: Path) -> None:
    journal = tmp_path / "decisions.jsonl"
    assert append_decision(journal, _decision(sequence=1))
    journal.write_text("")  # truncated
    assert append_decision(journal, _decision(sequence=1))
    journal.rename(tmp_path / "decisions.old")  # moved away: a new file takes its place
    assert append_decision(journal, _decision(sequence=1))
    assert not append_decision(journal, _decision(sequence=1))
    assert [d.sequence for d in read_decisions(journal)] == [1]


def test_a_torn_line_is_skipped_and_the_next_decision_kept_whole(tmp_path: Path) -> None:
    # A full disk or a crash mid-write leaves a line without its end.
    journal = tmp_path / "decisions.jsonl"
    assert append_decision(journal, _decision(sequence=1))
    with journal.open("a") as handle:
        handle.write('{"timestamp":"2025-01-01T00:00:00Z","service":"consu')
    assert append_decision(journal, _decision(sequence=2))
    decisions, unreadable = read_journal(journal)
    assert [d.sequence for d in decisions] == [1, 2] and unreadable == 1
    assert [d.sequence for d in read_decisions(journal)] == [1, 2]


def test_a_decision_decided_again_supersedes_its_line_and_is_read_once(tmp_path: Path) -> None:
    """A hold's line was written by a local activity in a workflow task that never completed
    (its worker was killed); the retried task decided a scale-up under the same key. The log's
    line for that key is the scale-up: every reader sees it once, and a late retry of the lost
    hold's write does not bring the hold back."""
    journal = tmp_path / "decisions.jsonl"
    workflow = "docktor:shop:consumer"
    one = _decision(workflow_id=workflow, first_run_id="run-a", sequence=1)
    lost = _decision(
        workflow_id=workflow,
        first_run_id="run-a",
        sequence=2,
        timestamp=datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC),
        current_replicas=2,
        target_replicas=2,
        observations={"queue.backlog": 10.0},
    )
    kept = lost.model_copy(
        update={
            "timestamp": datetime(2025, 1, 1, 0, 0, 11, tzinfo=UTC),
            "action": "scale_up",
            "target_replicas": 4,
            "observations": {"queue.backlog": 900.0},
        }
    )
    assert append_decision(journal, one)
    assert append_decision(journal, lost)
    assert append_decision(journal, kept)
    assert not append_decision(journal, kept)  # the scale-up's record retried
    assert not append_decision(journal, lost)  # the lost write retried late
    journal_module._seen.clear()  # another process, or this one restarted, reads the tail
    assert not append_decision(journal, kept)
    assert not append_decision(journal, lost)

    assert [(d.sequence, d.action) for d in read_decisions(journal)] == [
        (1, "hold"),
        (2, "scale_up"),
    ]
    latest, unreadable = latest_decisions(journal, ["consumer"], tail=1)
    assert [(d.sequence, d.action) for d in latest] == [(2, "scale_up")] and unreadable == 0
    latest, _ = latest_decisions(journal, ["consumer"], tail=10)
    assert [(d.sequence, d.action) for d in latest] == [(1, "hold"), (2, "scale_up")]
    samples = logged_samples(
        journal, "consumer", workflow, datetime(2025, 1, 1, tzinfo=UTC), kept.timestamp
    )
    assert [s.metrics for s in samples] == [{"queue.backlog": 900.0}]
