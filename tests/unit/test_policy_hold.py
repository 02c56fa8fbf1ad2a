"""docktor/policy/hold.py: a manual scale's count holds, in both directions, until it ends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from docktor.policy import decide
from docktor.policy import hold as manual_hold
from docktor.values import ManualHold, PolicyState
from tests.unit.test_policy import BUSY, CALM, NOW, ago, obs, spec
from tests.unit.test_policy_target import spec as target_spec


def held(replicas: int, seconds: float = 60) -> ManualHold:
    return ManualHold(replicas=replicas, until=NOW + timedelta(seconds=seconds), by="ana")


def test_a_held_count_stands_against_a_scale_up() -> None:
    proposal = decide(spec(), obs(3, **BUSY), PolicyState(hold=held(3)), NOW)
    assert (proposal.action, proposal.target_replicas) == ("hold", 3)
    assert proposal.reason.startswith("held by manual scale until 12:01:00 UTC")
    # What the policy would have done is still said.
    assert "the policy wanted scale_up to 5" in proposal.reason
    assert proposal.matched_rules == ["queue.backlog 812 > 500"]


def test_a_held_count_stands_against_a_scale_down() -> None:
    proposal = decide(spec(), obs(6, **CALM), PolicyState(hold=held(6)), NOW)
    assert (proposal.action, proposal.target_replicas) == ("hold", 6)
    assert "the policy wanted scale_down to 5" in proposal.reason


def test_a_hold_that_agrees_with_the_policy_is_named_in_its_reason() -> None:
    # Calm, but the down cooldown runs: the policy holds anyway.
    proposal = decide(
        spec(),
        obs(6, **CALM),
        PolicyState(last_scale_up_at=ago(200), last_scale_down_at=ago(10), hold=held(6)),
        NOW,
    )
    assert (proposal.action, proposal.target_replicas) == ("hold", 6)
    assert "cooldown" in proposal.reason
    assert proposal.reason.endswith("; held by manual scale until 12:01:00 UTC")


def test_a_lost_replica_is_restored_to_the_held_count() -> None:
    proposal = decide(spec(), obs(2, **CALM), PolicyState(expected_replicas=3, hold=held(3)), NOW)
    assert (proposal.action, proposal.current_replicas, proposal.target_replicas) == (
        "scale_up",
        2,
        3,
    )


def test_an_ended_hold_changes_nothing() -> None:
    ended = ManualHold(replicas=3, until=NOW, by="ana")
    with_it = decide(spec(), obs(3, **BUSY), PolicyState(hold=ended), NOW)
    assert with_it == decide(spec(), obs(3, **BUSY), PolicyState(), NOW)
    assert with_it.target_replicas == 5


def test_bounds_still_win_over_a_hold() -> None:
    # A spec update narrowed the bounds during the hold.
    proposal = decide(spec(max_replicas=4), obs(4, **CALM), PolicyState(hold=held(6)), NOW)
    assert proposal.target_replicas == 4


def test_the_default_hold_is_the_longer_cooldown_else_the_longer_window() -> None:
    assert manual_hold.default_seconds(spec()) == 120
    target = target_spec()
    assert manual_hold.default_seconds(target) == 90  # no cooldowns: the scale-down window
    start = manual_hold.start(target, 3, None, NOW, by="ana")
    assert start == ManualHold(replicas=3, until=NOW + timedelta(seconds=90), by="ana")
    assert manual_hold.start(spec(), 3, 0, NOW) is None
    five = manual_hold.start(spec(), 3, 5, NOW)
    assert five is not None and five.until == NOW + timedelta(seconds=5)


@pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf"), 400 * 86400])
def test_a_hold_no_clock_can_hold_is_refused(seconds: float) -> None:
    assert manual_hold.problem(seconds)


def test_reasonable_holds_are_taken() -> None:
    assert manual_hold.problem(None) is None
    assert manual_hold.problem(0) is None
    assert manual_hold.problem(3600) is None


def test_a_hold_that_ends_on_another_day_names_the_date() -> None:
    proposal = decide(spec(), obs(3, **BUSY), PolicyState(hold=held(3, seconds=2 * 86400)), NOW)
    assert proposal.reason.startswith("held by manual scale until 2026-01-03 12:00:00 UTC")
