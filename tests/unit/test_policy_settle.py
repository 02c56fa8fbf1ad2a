"""docktor.policy.settle: the stages every recommendation goes through, a model's included.

A model's target enters at *recommend*; these are the limits it is then held to (max_step,
cooldowns, bounds), the same ones the rules' recommendation meets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from docktor.policy import action_for, settle
from docktor.spec import ServiceSpec
from docktor.values import PolicyMemory

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
# The step policy's cooldowns: 30 s up, 120 s down (from the last action in either direction).
SPEC = ServiceSpec(name="worker", min_replicas=1, max_replicas=10)


def run(
    current: int,
    target: int,
    step: int = 2,
    up: float = 0.0,
    down: float = 0.0,
    spec: ServiceSpec = SPEC,
) -> tuple[int, list[str]]:
    """Settle `target` with `up`/`down` seconds of cooldown left."""
    last_up = NOW - timedelta(seconds=spec.cooldown.up - up) if up else None
    last_down = NOW - timedelta(seconds=spec.cooldown.down - down) if down else None
    settled = settle(spec, current, target, PolicyMemory(), NOW, last_up, last_down, step)
    return settled.replicas, settled.notes


def test_a_target_within_every_limit_passes_unchanged() -> None:
    assert run(4, 6) == (6, [])
    assert run(4, 2) == (2, [])
    assert run(4, 4) == (4, [])


def test_a_big_jump_is_limited_to_max_step() -> None:
    target, notes = run(4, 9, step=2)
    assert target == 6
    assert notes == ["limited to max_step 2 from 4: 9 -> 6"]
    assert run(4, 1, step=2)[0] == 2


def test_above_max_is_clamped_and_below_min_too() -> None:
    target, notes = run(9, 12, step=5)
    assert target == 10
    assert notes == ["clamped to max_replicas 10: 12 -> 10"]
    target, notes = run(2, 0, step=5)
    assert target == 1
    assert notes == ["clamped to min_replicas 1: 0 -> 1"]


def test_no_scale_up_during_the_up_cooldown() -> None:
    target, notes = run(4, 6, up=11.2)
    assert target == 4
    assert notes == ["scale-up cooldown, 12s left: holding at 4"]
    # The down cooldown does not stop a scale-up ...
    assert run(4, 6, down=100) == (6, [])


def test_no_scale_down_during_the_down_cooldown() -> None:
    target, notes = run(4, 3, down=90)
    assert target == 4
    assert notes == ["scale-down cooldown, 90s left: holding at 4"]
    # ... and a scale-up's own cooldown does not stop a scale-down once the down cooldown
    # (counted from the last action in either direction) has run out.
    quick_down = ServiceSpec(name="worker", max_replicas=10, cooldown={"up": 30, "down": 5})
    assert run(4, 3, up=10, spec=quick_down) == (3, [])


def test_bounds_win_over_step_and_cooldown_when_current_is_outside_them() -> None:
    # 0 running, min 1: the model's "hold" and an active up cooldown still give 1, as the rules'
    # own bounds correction would.
    assert run(0, 0, up=30)[0] == 1
    # 15 running, max 10, max_step 2: straight back to 10, not 13.
    assert run(15, 13, step=2)[0] == 10


def test_several_adjustments_are_all_noted() -> None:
    target, notes = run(4, 20, step=3, up=5)
    assert target == 4
    assert len(notes) == 2


def test_action_for() -> None:
    assert action_for(3, 5) == "scale_up"
    assert action_for(3, 1) == "scale_down"
    assert action_for(3, 3) == "hold"


@st.composite
def cases(draw: st.DrawFn) -> tuple[ServiceSpec, int, int, int, float, float]:
    low = draw(st.integers(0, 20))
    high = draw(st.integers(max(low, 1), 40))
    current = draw(st.integers(low, high))
    target = draw(st.integers(-100, 200))
    step = draw(st.integers(1, 10))
    up = draw(st.sampled_from([0.0, 0.5, 30.0]))
    down = draw(st.sampled_from([0.0, 0.5, 90.0]))
    spec = ServiceSpec(name="s", min_replicas=low, max_replicas=high)
    return spec, current, target, step, up, down


@given(cases())
def test_property_within_bounds_and_within_max_step(
    case: tuple[ServiceSpec, int, int, int, float, float],
) -> None:
    spec, current, model_target, step, up, down = case
    target, notes = run(current, model_target, step, up, down, spec)
    assert spec.min_replicas <= target <= spec.max_replicas
    assert abs(target - current) <= step
    if up > 0:
        assert target <= current
    if up > 0 or down > 0:
        # The down cooldown counts from the last action in either direction.
        assert target >= current
    # Nothing adjusted means the model got exactly what it asked for.
    assert bool(notes) == (target != model_target)


@given(
    st.integers(0, 20),
    st.integers(1, 20),
    st.integers(-50, 80),
    st.integers(-50, 80),
    st.integers(1, 10),
)
def test_property_never_outside_bounds_even_from_outside(
    low: int, span: int, current: int, model_target: int, step: int
) -> None:
    spec = ServiceSpec(name="s", min_replicas=low, max_replicas=low + span)
    target, _ = run(max(current, 0), model_target, step, 30.0, 120.0, spec)
    assert spec.min_replicas <= target <= spec.max_replicas


# ---- missing data ------------------------------------------------------------------------------


def test_no_scale_down_while_a_metric_is_missing() -> None:
    # The rules held 3 because the queue could not be read; a model answering 1 holds too.
    settled = settle(SPEC, 3, 1, PolicyMemory(), NOW, max_step=5, missing=["queue.backlog"])
    assert settled.replicas == 3
    assert settled.notes == ["not scaling down without queue.backlog: holding at 3"]


def test_missing_data_allows_a_scale_up_and_nothing_missing_allows_down() -> None:
    up = settle(SPEC, 3, 5, PolicyMemory(), NOW, max_step=5, missing=["queue.backlog"])
    assert (up.replicas, up.notes) == (5, [])
    down = settle(SPEC, 3, 1, PolicyMemory(), NOW, max_step=5, missing=[])
    assert (down.replicas, down.notes) == (1, [])


def test_the_guarded_count_is_what_the_windows_remember() -> None:
    # The model's 1 never joins the scale-down window: a later iteration with the metrics back
    # must not find a low recommendation the guard refused.
    memory = PolicyMemory()
    settle(SPEC, 3, 1, memory, NOW, max_step=5, missing=["cpu.avg_pct"])
    assert [r.replicas for r in memory.recommendations] == [3]


def test_bounds_still_win_over_the_guard() -> None:
    # 12 running with max 10: back to 10 though a metric is missing, as the pre-checks do.
    settled = settle(SPEC, 12, 9, PolicyMemory(), NOW, max_step=5, missing=["queue.backlog"])
    assert settled.replicas == 10


@given(cases(), st.lists(st.sampled_from(["queue.backlog", "cpu.avg_pct"]), min_size=1))
def test_property_never_down_with_a_metric_missing(
    case: tuple[ServiceSpec, int, int, int, float, float], missing: list[str]
) -> None:
    spec, current, model_target, step, up, down = case
    settled = settle(
        spec, current, model_target, PolicyMemory(), NOW, max_step=step, missing=missing
    )
    assert settled.replicas >= current
