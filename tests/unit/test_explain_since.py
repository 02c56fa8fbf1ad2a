"""`explain --since` / explain_decisions(since=...): what a moment is, and which decisions
are at or after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from docktor.client.operate import BadArgument, _latest, parse_since
from docktor.values import Decision

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_a_duration_counts_back_from_now() -> None:
    assert parse_since("10m", NOW) == NOW - timedelta(minutes=10)
    assert parse_since("90", NOW) == NOW - timedelta(seconds=90)


def test_an_iso_time_is_utc_unless_it_says_otherwise() -> None:
    assert parse_since("2025-06-01T10:30:00Z", NOW) == datetime(2025, 6, 1, 10, 30, tzinfo=UTC)
    assert parse_since("2025-06-01T10:30:00", NOW) == datetime(2025, 6, 1, 10, 30, tzinfo=UTC)
    assert parse_since("2025-06-01T12:30:00+02:00", NOW) == datetime(2025, 6, 1, 10, 30, tzinfo=UTC)


def test_anything_else_is_refused_with_the_forms_it_takes() -> None:
    with pytest.raises(BadArgument, match="since: expected a duration such as 10m") as error:
        parse_since("yesterday", NOW)
    assert error.value.exit_code == 2


def test_since_keeps_the_latest_at_or_after_the_moment() -> None:
    decisions = [
        Decision(
            timestamp=NOW - timedelta(minutes=minutes),
            service="consumer",
            action="hold",
            current_replicas=1,
            target_replicas=1,
            reason="r",
            sequence=10 - minutes,
        )
        for minutes in (9, 5, 3, 1)
    ]
    since = NOW - timedelta(minutes=5)
    assert [d.sequence for d in _latest(decisions, 10, since)] == [5, 7, 9]
    assert [d.sequence for d in _latest(decisions, 2, since)] == [7, 9]
    assert _latest(decisions, 10, NOW + timedelta(seconds=1)) == []
