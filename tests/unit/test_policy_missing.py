"""Replicas found missing: `decide(..., expected=...)` names them and puts them back, unless the
policy wants fewer than run now anyway."""

from __future__ import annotations

from datetime import UTC, datetime

from docktor.plan import ServicePlan
from docktor.policy import decide
from docktor.spec import ServiceSpec
from docktor.values import Observation, PolicyState

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SPEC = ServicePlan.from_spec(
    ServiceSpec.model_validate(
        {
            "name": "worker",
            "min_replicas": 1,
            "max_replicas": 5,
            "cooldown": {"up": 600, "down": 600},
            "rules": {
                "scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 500}],
                "scale_down_when": [{"metric": "queue.backlog", "op": "<", "value": 50}],
            },
        }
    )
)


def seen(replicas: int, backlog: float | None) -> Observation:
    metrics = {} if backlog is None else {"queue.backlog": backlog}
    return Observation(taken_at=NOW, replicas=replicas, metrics=metrics)


def test_a_hold_restores_the_lost_replicas_even_in_a_cooldown() -> None:
    proposal = decide(
        SPEC, seen(2, 100), PolicyState(last_scale_up_at=NOW, expected_replicas=4), NOW
    )
    assert (proposal.action, proposal.target_replicas) == ("scale_up", 4)
    assert proposal.reason.startswith("2 of 4 replicas found missing (2 running): restoring 4")


def test_missing_metrics_do_not_stop_the_restore() -> None:
    proposal = decide(SPEC, seen(1, None), PolicyState(expected_replicas=3), NOW)
    assert (proposal.action, proposal.target_replicas) == ("scale_up", 3)
    assert "no metrics could be observed" in proposal.reason


def test_a_scale_down_the_policy_wants_is_followed_and_names_the_loss() -> None:
    proposal = decide(SPEC, seen(3, 10), PolicyState(expected_replicas=4), NOW)
    assert (proposal.action, proposal.target_replicas) == ("scale_down", 2)
    assert proposal.reason.startswith("1 of 4 replicas found missing (3 running); ")


def test_the_restore_stays_within_max_replicas_and_nothing_missing_changes_nothing() -> None:
    narrowed = SPEC.model_copy(update={"max_replicas": 3})
    proposal = decide(narrowed, seen(2, 100), PolicyState(expected_replicas=5), NOW)
    assert proposal.target_replicas == 3
    assert decide(SPEC, seen(4, 100), PolicyState(expected_replicas=4), NOW) == decide(
        SPEC, seen(4, 100), PolicyState(), NOW
    )
