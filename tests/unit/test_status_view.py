"""views.StatusView: one service's status computed once, and the table, the plain columns and
the JSON all read from it (docktor mcp returns the same model; tests/integration/test_mcp.py
drives that end to end)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docktor import views
from docktor.client.operate import ServiceState
from docktor.loop.messages import LoopStatus, PendingApproval
from docktor.values import Decision, ManualHold

NOW = datetime(2026, 6, 1, 14, 0, 0, tzinfo=UTC)
WORKFLOW = "docktor-shop-consumer"


def loop(**changes: Any) -> LoopStatus:
    fields: dict[str, Any] = {
        "workflow_id": WORKFLOW,
        "service": "consumer",
        "replicas": 3,
        "min_replicas": 1,
        "max_replicas": 8,
        "paused": False,
        "pause_reason": None,
        "iteration": 42,
        "last_decision": Decision(
            timestamp=NOW - timedelta(seconds=75),
            service="consumer",
            action="hold",
            current_replicas=3,
            target_replicas=3,
            reason="no rule matched",
        ),
        "cooldown_up_until": None,
        "cooldown_down_until": None,
    }
    fields.update(changes)
    return LoopStatus(**fields)


def answered(status: LoopStatus) -> ServiceState:
    return ServiceState(status.service, status.workflow_id, status)


def printed(states: list[ServiceState], tty: bool = False, as_json: bool = False) -> str:
    out = io.StringIO()
    views.print_status(states, NOW, out, tty=tty, as_json=as_json)
    return out.getvalue()


def cell(state: ServiceState, header: str) -> str:
    cells = views.status_cells(views.status_view(state, NOW))
    return cells[views.STATUS_HEADERS.index(header)]


def test_who_paused_is_shown_once_in_the_columns_the_table_and_the_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = answered(loop(paused=True, pause_reason="investigating backlog", paused_by="mcp:c"))
    assert cell(state, "PAUSED") == "yes: investigating backlog (by mcp:c)"

    plain = printed([state]).splitlines()[1]
    assert "yes: investigating backlog (by mcp:c)" in plain and plain.count("mcp:c") == 1
    # Wide enough that rich does not fold the cell.
    monkeypatch.setenv("COLUMNS", "400")
    table = printed([state], tty=True)
    assert "yes: investigating backlog (by mcp:c)" in table and table.count("mcp:c") == 1

    [row] = json.loads(printed([state], as_json=True))
    assert (row["paused"], row["pause_reason"], row["paused_by"]) == (
        True,
        "investigating backlog",
        "mcp:c",
    )


def test_a_reason_that_already_names_its_author_names_it_once() -> None:
    # `docktor mcp` once wrote the author into the reason too; a loop paused then keeps it.
    state = answered(
        loop(paused=True, pause_reason="investigating backlog (by mcp:c)", paused_by="mcp:c")
    )
    assert views.status_view(state, NOW).pause_reason == "investigating backlog"
    assert cell(state, "PAUSED") == "yes: investigating backlog (by mcp:c)"
    # Someone else named at the end is part of what the operator wrote.
    state = answered(loop(paused=True, pause_reason="asked (by ana)", paused_by="bob"))
    assert cell(state, "PAUSED") == "yes: asked (by ana) (by bob)"


def test_no_loop_and_a_loop_that_does_not_answer_differ() -> None:
    stopped = ServiceState("idle", "docktor-shop-idle", problem="not running")
    silent = ServiceState(
        "consumer", WORKFLOW, problem="the loop for service 'consumer' has not answered within 5s"
    )
    assert views.status_view(stopped, NOW).running is False
    assert views.status_view(silent, NOW).running is None
    assert (cell(stopped, "LAST"), cell(stopped, "REASON")) == ("not running", "")
    assert (cell(silent, "LAST"), cell(silent, "REASON")) == ("no answer", silent.problem)

    rows = json.loads(printed([stopped, silent], as_json=True))
    assert [(r["running"], r["problem"], r["replicas"]) for r in rows] == [
        (False, "not running", None),
        (None, silent.problem, None),
    ]
    # The same keys on every row, loop or not.
    assert set(rows[0]) == set(rows[1]) == set(views.StatusView.model_fields)


def test_every_cell_is_read_from_the_view() -> None:
    state = answered(
        loop(
            cooldown_up_until=NOW + timedelta(seconds=65),
            hold=ManualHold(replicas=3, until=NOW + timedelta(seconds=250), by="ana"),
            pending_approval=PendingApproval(
                action="scale_up",
                current_replicas=3,
                target_replicas=5,
                reason="backlog",
                requested_at=NOW,
                expires_at=NOW + timedelta(seconds=598),
            ),
            journal_error="decisions from 7 on not written: disk full",
        )
    )
    view = views.status_view(state, NOW)
    assert (view.last_decision_age_s, view.cooldown_up_left_s, view.cooldown_down_left_s) == (
        75.0,
        65.0,
        None,
    )
    assert (view.hold_left_s, view.approval_expires_in_s) == (250.0, 598.0)
    assert views.status_cells(view) == [
        "consumer",
        "3",
        "1..8",
        "no",
        "hold",
        "1m15s ago",
        "up 1m05s",
        "3 until 14:04:10 UTC (4m10s)",
        "3 -> 5, expires in 9m58s",
        WORKFLOW,
        "decision log not written: decisions from 7 on not written: disk full; no rule matched",
    ]
    [row] = json.loads(printed([state], as_json=True))
    assert row == view.model_dump(mode="json")
