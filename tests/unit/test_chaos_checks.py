"""The chaos soak's plan and its decision-log check, on plain values: one seed gives one plan
with every kind of fault, and the log is held against history line by line, so a stale line,
a lost one, a repeated one and one out of order are each told apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from docktor.dev.bench.chaos.faults import FaultRecord
from docktor.dev.bench.chaos.plan import KINDS, ChaosOptions, schedule
from docktor.dev.bench.chaos.verify import History, check_journal
from docktor.values import Decision

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def decision(sequence: int, action: str = "hold", target: int = 2) -> Decision:
    return Decision(
        timestamp=T0 + timedelta(seconds=2 * sequence),
        service="consumer",
        action=action,  # type: ignore[arg-type]
        current_replicas=2,
        target_replicas=target,
        reason="why",
        sequence=sequence,
        workflow_id="docktor:chaos:consumer",
        run_id="run",
        first_run_id="run",
    )


def test_one_seed_one_plan_with_every_kind_of_fault() -> None:
    options = ChaosOptions(duration=600, fault_every=30, seed=7)
    plan = schedule(options)
    assert plan == schedule(options)
    assert {fault.kind for fault in plan} == set(KINDS)
    assert [fault.at for fault in plan] == sorted(fault.at for fault in plan)
    assert all(0 <= fault.at <= options.duration for fault in plan)
    assert schedule(ChaosOptions(duration=600, fault_every=30, seed=8)) != plan


def test_the_log_equal_to_history_passes() -> None:
    history = History({"consumer": [decision(n) for n in (1, 2, 3)]})
    check = check_journal(history, [decision(n) for n in (1, 2, 3)], [])
    assert check.violations == [] and check.matched == 3


def test_each_kind_of_difference_is_named() -> None:
    committed = [decision(1), decision(2, "scale_up", 4), decision(3), decision(4), decision(5)]
    lines = [
        decision(1),
        decision(2),  # the retried task's stale hold where history has the scale-up
        decision(4),
        decision(5),
        decision(4),  # written twice
        decision(6),  # never committed
    ]
    outage = FaultRecord("journal_unwritable", 0.0, decision(3).timestamp.timestamp() - 1)
    outage.ended = outage.started + 2
    check = check_journal(History({"consumer": committed}), lines, [outage])
    found = {(v.invariant, v.detail.split(" ")[1]) for v in check.violations}
    assert found == {
        ("journal_differs", "2"),
        ("journal_missing", "3"),
        ("journal_duplicated", "4"),
        ("journal_extra", "log"),
    }
    missing = next(v for v in check.violations if v.invariant == "journal_missing")
    assert missing.detail.endswith("(during journal_unwritable)")
    differs = next(v for v in check.violations if v.invariant == "journal_differs")
    assert "scale_up 2 -> 4" in differs.detail and "the log has hold 2 -> 2" in differs.detail


def test_a_line_written_after_a_later_one_is_out_of_order() -> None:
    history = History({"consumer": [decision(n) for n in (1, 2, 3)]})
    check = check_journal(history, [decision(1), decision(3), decision(2)], [])
    assert [v.invariant for v in check.violations] == ["journal_out_of_order"]
