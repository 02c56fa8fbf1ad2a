"""When a control is void: the client's side (void_after) and the loop's (void_problem)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from docktor.client.loops import void_after
from docktor.loop.messages import ManualScale, ResumeRequest, void_problem

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_a_control_is_void_before_its_sender_stops_waiting() -> None:
    # The margin leaves time for a last-moment acceptance to reach the client before it gives
    # up, so that "not answered in time" always means "not done".
    assert NOW + timedelta(seconds=29) == void_after(30, NOW)
    assert NOW < void_after(2, NOW) < NOW + timedelta(seconds=2)
    assert void_after(0.5, NOW) > NOW


def test_the_loop_refuses_only_what_arrives_after_the_void_time() -> None:
    assert void_problem(None, NOW) is None  # older clients, recorded histories
    assert void_problem(NOW, NOW) is None
    assert void_problem(NOW + timedelta(seconds=1), NOW) is None
    late = void_problem(NOW - timedelta(seconds=40), NOW)
    assert late is not None
    assert "expired at 11:59:20 UTC" in late and "40s later" in late
    # Without a zone, UTC, as docktor sends it.
    naive = datetime(2026, 1, 1, 11, 59, 20)
    assert void_problem(naive, NOW) == late


def test_requests_of_older_clients_decode_without_a_void_time() -> None:
    assert ManualScale.model_validate({"replicas": 3}).void_after is None
    assert ResumeRequest.model_validate({}).void_after is None
