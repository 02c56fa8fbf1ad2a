"""docktor.policy, the target policy and the stages after it: plain functions of explicit inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docktor.loop.messages import LoopState
from docktor.plan import ServicePlan
from docktor.policy import decide
from docktor.spec import ConfigError, ServiceSpec, parse_config
from docktor.values import Observation, PolicyMemory, PolicyState, Proposal

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
QUEUE = {"stream": "JOBS", "consumer": "workers"}


def spec(**overrides: Any) -> ServicePlan:
    """The plan a loop runs for a queue consumer with the default (target) policy."""
    data: dict[str, Any] = {"name": "consumer", "max_replicas": 12, "queue": QUEUE}
    data.update(overrides)
    return ServicePlan.from_spec(ServiceSpec.model_validate(data))


def sample(
    at: float, replicas: int, backlog: float, arrived: float, acked: float, in_flight: float = 0
) -> Observation:
    return Observation(
        taken_at=T0 + timedelta(seconds=at),
        replicas=replicas,
        metrics={"queue.backlog": backlog, "queue.ack_pending": in_flight},
        counters={"queue.stream_last_seq": arrived, "queue.ack_floor": acked},
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step_pair(
    replicas: int, backlog: float, rate_in: float, rate_out: float, before_backlog: float = 0
) -> tuple[Observation, Observation]:
    """Two samples 5 s apart with the given rates."""
    previous = sample(0, replicas, before_backlog, 10_000, 10_000)
    current = sample(5, replicas, backlog, 10_000 + 5 * rate_in, 10_000 + 5 * rate_out)
    return current, previous


# ---- defaults and config -----------------------------------------------------------------------


def test_a_queue_service_without_rules_gets_target_tracking() -> None:
    service = spec()
    assert service.policy == "target"
    assert service.target == {"queue.backlog_per_replica": 100.0}
    assert service.check_interval == 4.0
    assert (service.cooldown.up, service.cooldown.down) == (0.0, 0.0)
    assert service.behavior.down.window > 0


def test_a_service_with_rules_keeps_the_step_policy_and_its_old_defaults() -> None:
    rules = {"scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 200}]}
    service = spec(rules=rules)
    assert service.policy == "step"
    assert service.check_interval == 15.0
    assert (service.cooldown.up, service.cooldown.down) == (30.0, 120.0)
    assert service.behavior.down.window == 0
    assert service.behavior.up.window == 0


def test_what_a_file_sets_is_kept() -> None:
    service = spec(check_interval=2, cooldown={"up": 1, "down": 9})
    assert service.check_interval == 2.0
    assert (service.cooldown.up, service.cooldown.down) == (1.0, 9.0)


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (
            "{name: a, queue: {stream: J, consumer: w}, target: {cpu.avg_pct: 60}, "
            "rules: {scale_up_when: [{metric: cpu.avg_pct, op: '>', value: 1}]}}",
            "services[0].policy: both rules and target are set",
        ),
        ("{name: a, target: {cpu.avg_pct: 0}}", "services[0].target: cpu.avg_pct: must be"),
        ("{name: a, target: {'CPU load': 5}}", "services[0].target: 'CPU load' is not a metric"),
        ("{name: a, policy: target}", "target: required for policy target"),
        ("{name: a, policy: fast}", "services[0].policy: must be one of"),
        ("{name: a, tolerance: 1.5}", "services[0].tolerance:"),
        ("{name: a, rate: {headroom: -1}}", "services[0].rate.headroom:"),
        ("{name: a, rate: {drain_within: 0}}", "services[0].rate.drain_within:"),
        ("{name: a, behavior: {down: {windw: 30}}}", "services[0].behavior.down.windw: unknown"),
        ("{name: a, behavior: {up: {limit: {percent: 0}}}}", "services[0].behavior.up.limit"),
        ("{name: a, fallback: {after: 3}}", "services[0].fallback.replicas: required"),
    ],
)
def test_policy_config_errors_name_the_field(service: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"services: [{service}]", base_dir=tmp_path)
    assert any(message in line for line in caught.value.problems), caught.value.problems


def test_the_payload_round_trips_without_changing_the_policy() -> None:
    service = spec(behavior={"up": {"limit": {"replicas": 4, "percent": 100}}})
    again = ServicePlan.model_validate(service.model_dump(mode="json"))
    assert again == service


# ---- recommend: target tracking ------------------------------------------------------------------


def test_rate_feed_forward_with_a_configured_per_replica_rate() -> None:
    service = spec(rate={"per_replica": 48})
    current, previous = step_pair(replicas=4, backlog=0, rate_in=480, rate_out=190)
    proposal = decide(service, current, PolicyState(previous=previous), at(5))
    assert (proposal.action, proposal.target_replicas) == ("scale_up", 10)
    assert "queue.rate_in 480/s ÷ 48/s per replica → 10" in proposal.reason


def test_the_backlog_is_drained_within_drain_within() -> None:
    service = spec(rate={"per_replica": 50, "drain_within": 10})
    # 100 msg/s arriving needs 2; 1000 waiting drained in 10 s needs 100 msg/s more: 4.
    current, previous = step_pair(
        replicas=2, backlog=1000, rate_in=100, rate_out=100, before_backlog=1000
    )
    proposal = decide(service, current, PolicyState(previous=previous), at(5))
    assert proposal.target_replicas == 10  # the backlog target (1000 / 100) is larger ...
    service = spec(rate={"per_replica": 50, "drain_within": 10}, target={"cpu.avg_pct": 60})
    proposal = decide(service, current, PolicyState(previous=previous), at(5))
    assert proposal.target_replicas == 4  # ... and alone the feed-forward asks for 4
    assert "backlog 1000 in 10s" in proposal.reason


def test_a_backlog_that_just_appeared_is_sized_as_it_will_be_at_the_next_check() -> None:
    service = spec()  # queue.backlog_per_replica: 100, a check every 4 s
    # Nothing waited 4 s ago; 800 wait now: a burst seen 2-4 s after it began. Sized on 800
    # alone (8) it piles up until the next check; growing 200/s, it will be 1600 then.
    previous = sample(0, 2, 0, 10_000, 10_000, in_flight=11)
    current = sample(4, 2, 800, 11_200, 10_400, in_flight=20)
    proposal = decide(service, current, PolicyState(previous=previous), at(4))
    assert (proposal.action, proposal.target_replicas) == ("scale_up", 12)
    assert "queue.backlog 800, 1600 at the next check at +200/s, ÷ 100 per replica → 16" in (
        proposal.reason
    )


def test_a_backlog_already_there_is_sized_as_it_is() -> None:
    # It was waiting at the last check too: the capacity asked for it then may still be
    # starting, so its growth says nothing new and is not projected.
    service = spec()
    previous = sample(0, 2, 400, 10_000, 10_000, in_flight=20)
    current = sample(4, 2, 800, 10_800, 10_400, in_flight=20)
    proposal = decide(service, current, PolicyState(previous=previous), at(4))
    assert proposal.target_replicas == 8
    assert "queue.backlog 800 ÷ 100 per replica → 8" in proposal.reason


def test_the_largest_target_wins_and_the_reason_names_it() -> None:
    service = spec(target={"queue.backlog_per_replica": 100, "cpu.avg_pct": 50})
    current, previous = step_pair(replicas=4, backlog=250, rate_in=100, rate_out=100)
    current.metrics["cpu.avg_pct"] = 90.0  # 4 x 90 / 50 = 7.2 -> 8; backlog 250 / 100 -> 3
    proposal = decide(service, current, PolicyState(previous=previous), at(5))
    assert proposal.target_replicas == 8
    assert "cpu.avg_pct 90 vs target 50 at 4 replicas → 8" in proposal.reason


def test_within_the_tolerance_nothing_changes() -> None:
    service = spec(target={"cpu.avg_pct": 60}, rate={"enabled": False})
    current, previous = step_pair(replicas=5, backlog=0, rate_in=0, rate_out=0)
    current.metrics["cpu.avg_pct"] = 64.0  # 5 x 64 / 60 = 5.33: within 10%
    proposal = decide(service, current, PolicyState(previous=previous), at(5))
    assert (proposal.action, proposal.target_replicas) == ("hold", 5)
    assert "within 10% of 5" in proposal.reason


def test_the_per_replica_rate_is_learned_while_saturated() -> None:
    service = spec()
    # 4 replicas, work waiting at both samples: they serve 200 msg/s, so one does 50.
    current, previous = step_pair(
        replicas=4, backlog=900, rate_in=400, rate_out=200, before_backlog=400
    )
    proposal = decide(service, current, PolicyState(previous=previous), at(5))
    assert proposal.memory is not None
    assert proposal.memory.per_replica_rate == pytest.approx(50.0)
    # 400/s + 900 in 10 s = 490/s over 50/s per replica -> 10.
    assert proposal.target_replicas == 10
    assert "(estimated)" in proposal.reason


def test_no_estimate_while_the_replica_count_changed_or_idle() -> None:
    service = spec()
    previous = sample(0, 2, 400, 0, 0)
    current = sample(5, 4, 900, 2000, 500)  # 2 -> 4: new replicas were still starting
    proposal = decide(service, current, PolicyState(previous=previous), at(5))
    assert proposal.memory is not None and proposal.memory.per_replica_rate is None
    # Not saturated: nothing waiting. A low throughput says nothing about capacity ...
    current, previous = step_pair(replicas=10, backlog=0, rate_in=100, rate_out=100)
    proposal = decide(service, current, PolicyState(previous=previous), at(5))
    assert proposal.memory is not None and proposal.memory.per_replica_rate is None
    # ... but a replica that served more than the estimate proves it too low.
    known = PolicyMemory(per_replica_rate=5.0)
    proposal = decide(service, current, PolicyState(previous=previous, memory=known), at(5))
    assert proposal.memory is not None and proposal.memory.per_replica_rate == 10.0
    assert known.per_replica_rate == 5.0  # the memory handed in is not changed


def test_no_scale_down_before_the_rate_is_known() -> None:
    service = spec(rate={"per_replica": 50})
    first = sample(0, 6, 0, 1000, 1000)  # no previous sample: no rate yet
    proposal = decide(service, first, PolicyState(), at(0))
    assert (proposal.action, proposal.target_replicas) == ("hold", 6)
    assert "not scaling down without queue.rate_in" in proposal.reason


# ---- stabilise and limit -------------------------------------------------------------------------


def run(service: ServicePlan, steps: list[tuple[float, int, float, float]]) -> list[Proposal]:
    """Drive decide like the workflow: samples at the given times (t, replicas seen, backlog,
    arrival rate), scales booked with LoopState.note_scale."""
    state = LoopState()
    arrived = 0.0
    proposals = []
    previous_t = 0.0
    replicas = steps[0][1]
    for t, _, backlog, rate in steps:
        arrived += rate * (t - previous_t)
        previous_t = t
        observation = sample(t, replicas, backlog, arrived, arrived)
        proposal = decide(service, observation, state.policy_state(), at(t))
        assert proposal.memory is not None
        state.memory = proposal.memory
        state.last_sample = observation
        if proposal.target_replicas != replicas:
            state.note_scale(at(t), replicas, proposal.target_replicas)
            replicas = proposal.target_replicas
        proposals.append(proposal)
    return proposals


def test_the_scale_down_window_keeps_the_highest_recommendation() -> None:
    service = spec(rate={"per_replica": 50}, behavior={"down": {"window": 60}})
    load = [(0, 2, 0, 500)] + [(5.0 * i, 2, 0, 500 if i < 3 else 100) for i in range(1, 30)]
    proposals = run(service, load)
    targets = [p.target_replicas for p in proposals]
    assert max(targets) == 10
    # The burst ended at t=15 (its last recommendation of 10 at t=10): 10 is kept for 60 s ...
    assert targets[3:13] == [10] * 10
    assert "scale-down window keeps 10 (highest in 60s)" in proposals[5].reason
    # ... then it goes down to what the load needs, in one step.
    assert targets[14:] == [2] * len(targets[14:])


def test_without_a_rate_a_scale_down_gives_back_at_most_a_quarter_per_check() -> None:
    # Only the backlog to go on (an SQS queue): nothing waits, but what arrives is not known,
    # so the count is found from above instead of dropping to the minimum at once.
    service = spec(rate={"enabled": False}, behavior={"down": {"window": 0}})
    proposals = run(service, [(4.0 * i, 12, 0, 400) for i in range(10)])
    assert [p.target_replicas for p in proposals] == [9, 7, 6, 5, 4, 3, 2, 1, 1, 1]
    assert "no arrival rate to size by: a quarter down at most, to 9" in proposals[0].reason
    # With the rate tracked, the rate says how many the load needs: down in one step.
    tracked = spec(rate={"per_replica": 50}, behavior={"down": {"window": 0}})
    assert run(tracked, [(0, 12, 0, 50), (4, 12, 0, 50)])[-1].target_replicas == 1


def test_the_up_rate_limit_counts_from_the_start_of_the_period() -> None:
    service = spec(
        rate={"per_replica": 50},
        behavior={"up": {"limit": {"replicas": 4, "percent": 100, "period": 15}}},
    )
    proposals = run(service, [(0, 2, 0, 600), (5, 2, 0, 600), (10, 2, 0, 600), (25, 2, 0, 600)])
    targets = [p.target_replicas for p in proposals]
    # max(2 + 4, 2 x 2) = 6 at t=5; at t=10 the period started at 2: still 6; at t=25 from 6: 12.
    assert targets[1:] == [6, 6, 12]
    assert "limited to 6 by the scale-up rate (4 replicas or 100% per 15s)" in proposals[1].reason


def test_the_down_rate_limit() -> None:
    service = spec(
        rate={"per_replica": 50},
        behavior={"down": {"window": 0, "limit": {"percent": 50, "period": 10}}},
    )
    proposals = run(service, [(0, 12, 0, 50), (5, 12, 0, 50), (10, 12, 0, 50), (20, 12, 0, 50)])
    assert [p.target_replicas for p in proposals[1:]] == [6, 6, 3]


def test_bounds_win_and_say_so() -> None:
    service = spec(rate={"per_replica": 10}, max_replicas=8)
    current, previous = step_pair(replicas=4, backlog=0, rate_in=480, rate_out=100)
    proposal = decide(service, current, PolicyState(previous=previous), at(5))
    assert proposal.target_replicas == 8
    assert proposal.recommended == 48
    assert "clamped to max_replicas 8: 48 -> 8" in proposal.reason


# ---- scale to zero and fallback ------------------------------------------------------------------


def test_scale_to_zero_waits_for_the_idle_period_and_wakes_on_work() -> None:
    service = spec(
        min_replicas=0,
        rate={"per_replica": 50},
        activation={"idle_for": 30},
        behavior={"down": {"window": 0}},
    )
    idle = [(5.0 * i, 3, 0, 0) for i in range(12)]
    proposals = run(service, idle)
    targets = [p.target_replicas for p in proposals]
    assert (
        targets[1] == 1 and "keeps 1 until the queue has been idle for 30s" in proposals[1].reason
    )
    zero_at = targets.index(0)
    assert zero_at * 5 >= 30 and "scale to zero" in proposals[zero_at].reason
    # Asleep at 0: one message waiting wakes it.
    woken = decide(
        service, sample(60, 0, 1, 10, 9), PolicyState(previous=sample(55, 0, 0, 9, 9)), at(60)
    )
    assert woken.target_replicas >= 1
    assert "activated: 1 waiting > 0" in woken.reason
    quiet = decide(
        service, sample(60, 0, 0, 9, 9), PolicyState(previous=sample(55, 0, 0, 9, 9)), at(60)
    )
    assert quiet.target_replicas == 0


def test_fallback_after_consecutive_failures_never_down() -> None:
    service = spec(fallback={"after": 2, "replicas": 6})
    memory = PolicyMemory()
    targets = []
    for replicas in (3, 3, 8):
        blind = Observation(taken_at=T0, replicas=replicas, errors=["nats: connection refused"])
        proposal = decide(service, blind, PolicyState(memory=memory), T0)
        assert proposal.memory is not None
        memory = proposal.memory
        targets.append(proposal.target_replicas)
    # 1st failure: hold; 2nd: up to the fallback 6; at 8 running: never down to 6.
    assert targets == [3, 6, 8]
    # A good observation resets the count.
    current, previous = step_pair(replicas=3, backlog=0, rate_in=100, rate_out=100)
    proposal = decide(service, current, PolicyState(previous=previous, memory=memory), T0)
    assert proposal.memory is not None and proposal.memory.failed_observations == 0


# ---- properties ----------------------------------------------------------------------------------


# 40 decisions per example: no per-example deadline, so a loaded CI machine cannot fail it.
@settings(deadline=None, max_examples=50)
@given(
    low=st.integers(0, 5),
    span=st.integers(0, 20),
    replicas=st.integers(0, 30),
    backlog=st.floats(0, 1e7),
    rate_in=st.floats(0, 1e6),
    rate_out=st.floats(0, 1e6),
    per_replica=st.one_of(st.none(), st.floats(0.01, 1000)),
)
def test_property_every_target_is_within_bounds_and_memory_stays_small(
    low: int,
    span: int,
    replicas: int,
    backlog: float,
    rate_in: float,
    rate_out: float,
    per_replica: float | None,
) -> None:
    service = spec(
        min_replicas=low,
        max_replicas=max(1, low + span),
        rate={"per_replica": per_replica},
    )
    memory = PolicyMemory()
    for i in range(40):
        current, previous = step_pair(replicas, backlog, rate_in, rate_out, before_backlog=backlog)
        current.taken_at += timedelta(seconds=5 * i)
        previous.taken_at += timedelta(seconds=5 * i)
        proposal = decide(
            service, current, PolicyState(previous=previous, memory=memory), current.taken_at
        )
        assert proposal.memory is not None
        memory = proposal.memory
        assert service.min_replicas <= proposal.target_replicas <= service.max_replicas
    window = service.behavior.down.window
    assert len(memory.recommendations) <= window / 5 + 2


def test_a_shortfall_in_capacity_is_never_tolerated_but_a_surplus_is() -> None:
    service = spec(rate={"per_replica": 50})
    # 5 replicas serve 250/s; 260/s arriving is within 10%, but the backlog would grow forever.
    current, previous = step_pair(replicas=5, backlog=0, rate_in=260, rate_out=250)
    assert decide(service, current, PolicyState(previous=previous), at(5)).target_replicas == 6
    # 240/s needs 4.8: within 10% of 5, so no scale-down for so little.
    current, previous = step_pair(replicas=5, backlog=0, rate_in=240, rate_out=240)
    assert decide(service, current, PolicyState(previous=previous), at(5)).target_replicas == 5
