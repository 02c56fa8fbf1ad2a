"""docktor.policy: the replica arithmetic, as plain functions of explicit inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from docktor.plan import ServicePlan
from docktor.policy import cooldown_left, decide, derive_rates
from docktor.spec import ServiceSpec
from docktor.values import Observation, PolicyState, Proposal

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def spec(**overrides: Any) -> ServicePlan:
    """A queue-worker service: up on backlog OR cpu, down on backlog AND ack_pending."""
    data: dict[str, Any] = {
        "name": "worker",
        "min_replicas": 1,
        "max_replicas": 10,
        "scale_up_by": 2,
        "scale_down_by": 1,
        "cooldown": {"up": 30, "down": 120},
        "rules": {
            "scale_up_when": [
                {"metric": "queue.backlog", "op": ">", "value": 500},
                {"metric": "cpu.avg_pct", "op": ">", "value": 80},
            ],
            "scale_down_when": [
                {"metric": "queue.backlog", "op": "<", "value": 50},
                {"metric": "queue.ack_pending", "op": "<", "value": 10},
            ],
        },
    }
    data.update(overrides)
    return ServicePlan.from_spec(ServiceSpec.model_validate(data))


def obs(replicas: int, **metrics: float) -> Observation:
    return Observation(taken_at=NOW, replicas=replicas, metrics=_dotted(metrics))


def _dotted(metrics: dict[str, float]) -> dict[str, float]:
    # queue_backlog=3 -> {"queue.backlog": 3}: keyword arguments cannot contain dots.
    return {name.replace("_", ".", 1): value for name, value in metrics.items()}


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


CALM = {"queue_backlog": 10, "queue_ack_pending": 2, "cpu_avg_pct": 30}
BUSY = {"queue_backlog": 812, "queue_ack_pending": 40, "cpu_avg_pct": 30}
MIDDLE = {"queue_backlog": 200, "queue_ack_pending": 2, "cpu_avg_pct": 30}


# ---- scaling up: ANY rule ---------------------------------------------------------------------


def test_any_up_rule_scales_up_by_step() -> None:
    only_cpu = {"queue_backlog": 100, "queue_ack_pending": 2, "cpu_avg_pct": 95}
    for metrics in (BUSY, only_cpu):
        proposal = decide(spec(), obs(3, **metrics), PolicyState(), NOW)
        assert proposal.action == "scale_up"
        assert (proposal.current_replicas, proposal.target_replicas) == (3, 5)


def test_scale_up_is_clamped_to_max() -> None:
    proposal = decide(spec(), obs(9, **BUSY), PolicyState(), NOW)
    assert (proposal.action, proposal.target_replicas) == ("scale_up", 10)


def test_at_max_an_up_rule_holds() -> None:
    proposal = decide(spec(), obs(10, **BUSY), PolicyState(), NOW)
    assert (proposal.action, proposal.target_replicas) == ("hold", 10)
    assert "max_replicas (10)" in proposal.reason


def test_matched_rules_are_readable() -> None:
    metrics = {**BUSY, "cpu_avg_pct": 91.5}
    proposal = decide(spec(), obs(3, **metrics), PolicyState(), NOW)
    assert proposal.matched_rules == ["queue.backlog 812 > 500", "cpu.avg_pct 91.5 > 80"]
    assert "queue.backlog 812 > 500" in proposal.reason
    assert proposal.observations["queue.backlog"] == 812


# ---- scaling down: ALL rules ------------------------------------------------------------------


def test_all_down_rules_scale_down_by_step() -> None:
    proposal = decide(spec(scale_down_by=2), obs(5, **CALM), PolicyState(), NOW)
    assert (proposal.action, proposal.target_replicas) == ("scale_down", 3)
    assert proposal.matched_rules == ["queue.backlog 10 < 50", "queue.ack_pending 2 < 10"]


def test_one_down_rule_is_not_enough() -> None:
    busy_in_flight = {**CALM, "queue_ack_pending": 40}
    proposal = decide(spec(), obs(5, **busy_in_flight), PolicyState(), NOW)
    assert (proposal.action, proposal.target_replicas) == ("hold", 5)
    assert proposal.matched_rules == []


def test_scale_down_is_clamped_to_min() -> None:
    proposal = decide(spec(min_replicas=2, scale_down_by=3), obs(4, **CALM), PolicyState(), NOW)
    assert (proposal.action, proposal.target_replicas) == ("scale_down", 2)
    at_min = decide(spec(min_replicas=2), obs(2, **CALM), PolicyState(), NOW)
    assert (at_min.action, at_min.target_replicas) == ("hold", 2)


def test_no_rule_matched_holds_and_says_what_it_saw() -> None:
    proposal = decide(spec(), obs(4, **MIDDLE), PolicyState(), NOW)
    assert (proposal.action, proposal.target_replicas) == ("hold", 4)
    assert proposal.reason.startswith("no rule matched")
    assert "queue.backlog 200" in proposal.reason


def test_service_without_down_rules_never_scales_down() -> None:
    rules = {"scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 500}]}
    proposal = decide(spec(rules=rules), obs(5, queue_backlog=0), PolicyState(), NOW)
    assert proposal.action == "hold"


# ---- missing data -----------------------------------------------------------------------------


def test_missing_down_metric_is_false_and_named() -> None:
    proposal = decide(spec(), obs(5, queue_backlog=0, cpu_avg_pct=10), PolicyState(), NOW)
    assert (proposal.action, proposal.target_replicas) == ("hold", 5)
    assert proposal.missing_metrics == ["queue.ack_pending"]
    assert "queue.ack_pending" in proposal.reason


def test_missing_up_metric_is_false_and_named() -> None:
    # cpu is missing; the backlog alone still scales up, and the reason says what was not seen.
    proposal = decide(spec(), obs(3, queue_backlog=900, queue_ack_pending=50), PolicyState(), NOW)
    assert proposal.action == "scale_up"
    assert proposal.missing_metrics == ["cpu.avg_pct"]
    assert "cpu.avg_pct" in proposal.reason


def test_scale_down_reason_names_unobserved_up_metric() -> None:
    proposal = decide(spec(), obs(5, queue_backlog=0, queue_ack_pending=0), PolicyState(), NOW)
    assert proposal.action == "scale_down"
    assert proposal.missing_metrics == ["cpu.avg_pct"]
    assert "cpu.avg_pct" in proposal.reason


def test_no_metrics_at_all_holds_with_reason() -> None:
    observation = Observation(taken_at=NOW, replicas=5, errors=["nats: connection refused"])
    proposal = decide(spec(), observation, PolicyState(), NOW)
    assert (proposal.action, proposal.target_replicas) == ("hold", 5)
    assert "no metrics" in proposal.reason
    assert "nats: connection refused" in proposal.reason
    assert proposal.missing_metrics == sorted(spec().metric_names())


def test_no_metrics_never_scales_down_even_with_only_down_rules() -> None:
    # Rules that would hold on zeros must not be satisfied by absent data.
    rules = {"scale_down_when": [{"metric": "queue.backlog", "op": "<", "value": 50}]}
    proposal = decide(spec(rules=rules), Observation(taken_at=NOW, replicas=5), PolicyState(), NOW)
    assert proposal.action == "hold"
    assert "no metric source returned a value" in proposal.reason


# ---- bounds -----------------------------------------------------------------------------------


def test_below_min_is_corrected_even_in_cooldown() -> None:
    proposal = decide(
        spec(min_replicas=3),
        obs(1, **CALM),
        PolicyState(last_scale_up_at=ago(1), last_scale_down_at=ago(1)),
        NOW,
    )
    assert (proposal.action, proposal.target_replicas) == ("scale_up", 3)
    assert "below min_replicas (3)" in proposal.reason
    assert not proposal.cooldown_blocked


def test_above_max_is_corrected_even_in_cooldown_and_without_metrics() -> None:
    observation = Observation(taken_at=NOW, replicas=14)
    proposal = decide(spec(), observation, PolicyState(last_scale_up_at=ago(1)), NOW)
    assert (proposal.action, proposal.target_replicas) == ("scale_down", 10)
    assert "above max_replicas (10)" in proposal.reason


# ---- cooldowns --------------------------------------------------------------------------------


def test_up_cooldown_blocks_a_second_scale_up() -> None:
    blocked = decide(spec(), obs(3, **BUSY), PolicyState(last_scale_up_at=ago(10)), NOW)
    assert (blocked.action, blocked.target_replicas) == ("hold", 3)
    assert blocked.cooldown_blocked
    assert "scale-up cooldown, 20s left" in blocked.reason
    assert blocked.matched_rules == ["queue.backlog 812 > 500"]

    after = decide(spec(), obs(3, **BUSY), PolicyState(last_scale_up_at=ago(30)), NOW)
    assert (after.action, after.target_replicas) == ("scale_up", 5)


def test_up_cooldown_does_not_block_scale_down_once_down_cooldown_passed() -> None:
    # A long up cooldown, a short down cooldown: the up cooldown only guards scale-ups.
    service = spec(cooldown={"up": 300, "down": 60})
    proposal = decide(service, obs(5, **CALM), PolicyState(last_scale_up_at=ago(90)), NOW)
    assert (proposal.action, proposal.target_replicas) == ("scale_down", 4)
    assert not proposal.cooldown_blocked


def test_down_cooldown_counts_from_last_scale_up() -> None:
    blocked = decide(spec(), obs(5, **CALM), PolicyState(last_scale_up_at=ago(100)), NOW)
    assert (blocked.action, blocked.target_replicas) == ("hold", 5)
    assert blocked.cooldown_blocked
    assert "scale-down cooldown, 20s left" in blocked.reason


def test_down_cooldown_counts_from_last_scale_down() -> None:
    blocked = decide(spec(), obs(5, **CALM), PolicyState(last_scale_down_at=ago(119)), NOW)
    assert blocked.action == "hold" and blocked.cooldown_blocked


def test_down_cooldown_uses_the_latest_action_in_either_direction() -> None:
    # The older scale-down is past its cooldown; the newer scale-up is not.
    blocked = decide(
        spec(),
        obs(5, **CALM),
        PolicyState(last_scale_up_at=ago(60), last_scale_down_at=ago(500)),
        NOW,
    )
    assert blocked.action == "hold" and blocked.cooldown_blocked
    free = decide(
        spec(),
        obs(5, **CALM),
        PolicyState(last_scale_up_at=ago(500), last_scale_down_at=ago(120)),
        NOW,
    )
    assert free.action == "scale_down"


def test_cooldown_left() -> None:
    assert cooldown_left(None, 30, NOW) == 0.0
    assert cooldown_left(ago(10), 30, NOW) == 20.0
    assert cooldown_left(ago(40), 30, NOW) == 0.0


# ---- rates from counters ----------------------------------------------------------------------


def counters(at: datetime, seq: float, floor: float) -> Observation:
    return Observation(
        taken_at=at,
        replicas=2,
        counters={"queue.stream_last_seq": seq, "queue.ack_floor": floor},
    )


def test_rates_from_two_samples() -> None:
    rates = derive_rates(counters(NOW, 1500, 700), counters(ago(10), 500, 200))
    assert rates == {"queue.rate_in": 100.0, "queue.rate_out": 50.0}


def test_no_previous_sample_gives_no_rate() -> None:
    assert derive_rates(counters(NOW, 1500, 700), None) == {}


def test_zero_or_negative_time_gives_no_rate() -> None:
    assert derive_rates(counters(NOW, 1500, 700), counters(NOW, 500, 200)) == {}
    assert derive_rates(counters(ago(5), 1500, 700), counters(NOW, 500, 200)) == {}


def test_counter_going_backwards_gives_no_rate_for_it() -> None:
    # The stream was purged and recreated: its sequence restarted, the ack floor did not.
    rates = derive_rates(counters(NOW, 20, 700), counters(ago(10), 500, 200))
    assert rates == {"queue.rate_out": 50.0}


def test_missing_counter_gives_no_rate_for_it() -> None:
    current = Observation(taken_at=NOW, replicas=2, counters={"queue.stream_last_seq": 900})
    assert derive_rates(current, counters(ago(4), 500, 200)) == {"queue.rate_in": 100.0}


def test_decide_uses_derived_rates_in_rules() -> None:
    rules = {"scale_up_when": [{"metric": "queue.rate_in", "op": ">", "value": 80}]}
    first = decide(spec(rules=rules), counters(ago(10), 500, 200), PolicyState(), ago(10))
    assert first.action == "hold"
    assert first.missing_metrics == ["queue.rate_in"]

    second = decide(
        spec(rules=rules),
        counters(NOW, 1500, 700),
        PolicyState(previous=counters(ago(10), 500, 200)),
        NOW,
    )
    assert (second.action, second.target_replicas) == ("scale_up", 4)
    assert second.matched_rules == ["queue.rate_in 100 > 80"]
    assert second.observations["queue.rate_out"] == 50.0


# ---- rates over metrics_window ------------------------------------------------------------------

RATE_RULES = {"scale_up_when": [{"metric": "queue.rate_in", "op": ">", "value": 80}]}


def run_loop(service: ServicePlan, samples: list[Observation]) -> list[Proposal]:
    """decide on each sample in turn, handing on the previous sample and the memory, as the
    workflow does."""
    proposals: list[Proposal] = []
    state = PolicyState()
    for sample in samples:
        proposal = decide(service, sample, state, sample.taken_at)
        proposals.append(proposal)
        assert proposal.memory is not None
        state = PolicyState(previous=sample, memory=proposal.memory)
    return proposals


def burst_then_quiet() -> list[Observation]:
    """Every 10 s for 60 s: 10 msg/s, then 200 msg/s in the last 10 s."""
    seq, floor, samples = 0.0, 0.0, []
    for step in range(7):
        rate = 200 if step == 6 else 10
        seq, floor = (seq + rate * 10, floor + rate * 10) if step else (0.0, 0.0)
        samples.append(counters(ago(60 - 10 * step), seq, floor))
    return samples


def test_without_metrics_window_rates_are_over_one_interval_and_nothing_is_kept() -> None:
    service = spec(rules=RATE_RULES, check_interval=10)
    proposals = run_loop(service, burst_then_quiet())
    assert proposals[-1].observations["queue.rate_in"] == 200.0
    assert all(p.memory is not None and p.memory.rate_samples == [] for p in proposals)


def test_rates_are_measured_over_metrics_window() -> None:
    service = spec(rules=RATE_RULES, check_interval=10, metrics_window=60)
    proposals = run_loop(service, burst_then_quiet())
    # (50 x 10 + 200 x 10) messages in 60 s: the burst is read as a sixth of its height.
    last = proposals[-1]
    assert last.observations["queue.rate_in"] == round((5 * 100 + 2000) / 60, 3)
    assert last.action == "hold"
    # Before the loop has seen a whole window, the rate is over what it has seen.
    assert proposals[2].observations["queue.rate_in"] == 10.0


def test_a_window_shorter_than_the_interval_measures_one_interval() -> None:
    service = spec(rules=RATE_RULES, check_interval=10, metrics_window=3)
    assert run_loop(service, burst_then_quiet())[-1].observations["queue.rate_in"] == 200.0


def test_a_counter_that_went_backwards_within_the_window_is_measured_from_the_drop() -> None:
    service = spec(rules=RATE_RULES, check_interval=10, metrics_window=60)
    samples = burst_then_quiet()
    # The stream was recreated 20 s ago: its sequence restarted at 0.
    samples[4] = counters(samples[4].taken_at, 0, samples[4].counters["queue.ack_floor"])
    samples[5] = counters(samples[5].taken_at, 100, samples[5].counters["queue.ack_floor"])
    samples[6] = counters(samples[6].taken_at, 2100, samples[6].counters["queue.ack_floor"])
    rate_in = run_loop(service, samples)[-1].observations["queue.rate_in"]
    assert rate_in == (2100 - 0) / 20


def test_the_kept_samples_stay_few_whatever_the_window() -> None:
    service = spec(rules=RATE_RULES, check_interval=1, metrics_window=100)
    samples = [counters(ago(300 - t), t * 10, t * 5) for t in range(300)]
    memory = run_loop(service, samples)[-1].memory
    assert memory is not None and 0 < len(memory.rate_samples) <= 32


def test_the_per_replica_rate_is_learnt_over_the_last_interval() -> None:
    service = ServicePlan.from_spec(
        ServiceSpec.model_validate(
            {
                "name": "worker",
                "check_interval": 10,
                "metrics_window": 60,
                "queue": {"stream": "S", "consumer": "c"},
            }
        )
    )
    samples = burst_then_quiet()
    for sample in samples:
        sample.metrics["queue.backlog"] = 500  # saturated throughout: every replica is busy
    memory = run_loop(service, samples)[-1].memory
    # The last interval's 200 msg/s over 2 replicas, smoothed with the earlier 5 msg/s.
    assert memory is not None and memory.per_replica_rate is not None
    assert memory.per_replica_rate > 50


# ---- properties -------------------------------------------------------------------------------

METRICS = ["queue.backlog", "queue.ack_pending", "queue.rate_in", "cpu.avg_pct"]
OPERATORS = [">", ">=", "<", "<=", "==", "!="]

conditions = st.fixed_dictionaries(
    {
        "metric": st.sampled_from(METRICS),
        "op": st.sampled_from(OPERATORS),
        "value": st.integers(0, 1000).map(float),
    }
)


@st.composite
def scenarios(
    draw: st.DrawFn, current_in_bounds: bool = True
) -> tuple[ServicePlan, Observation, Proposal]:
    low = draw(st.integers(0, 20))
    high = draw(st.integers(max(low, 1), 30))
    service = spec(
        min_replicas=low,
        max_replicas=high,
        scale_up_by=draw(st.integers(1, 8)),
        scale_down_by=draw(st.integers(1, 8)),
        cooldown={"up": draw(st.integers(0, 300)), "down": draw(st.integers(0, 300))},
        rules={
            "scale_up_when": draw(st.lists(conditions, max_size=3)),
            "scale_down_when": draw(st.lists(conditions, max_size=3)),
        },
    )
    current = draw(st.integers(low, high) if current_in_bounds else st.integers(0, 40))
    metrics = draw(
        st.dictionaries(st.sampled_from(METRICS), st.integers(0, 1000).map(float), max_size=4)
    )
    moment = st.none() | st.integers(0, 600).map(ago)
    observation = Observation(taken_at=NOW, replicas=current, metrics=metrics)
    proposal = decide(
        service,
        observation,
        PolicyState(last_scale_up_at=draw(moment), last_scale_down_at=draw(moment)),
        NOW,
    )
    return service, observation, proposal


Scenario = tuple[ServicePlan, Observation, Proposal]


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_target_stays_within_bounds(scenario: Scenario) -> None:
    service, _, proposal = scenario
    assert service.min_replicas <= proposal.target_replicas <= service.max_replicas


@settings(max_examples=300, deadline=None)
@given(scenarios(current_in_bounds=False))
def test_out_of_bounds_is_always_brought_back(scenario: Scenario) -> None:
    service, _, proposal = scenario
    assert service.min_replicas <= proposal.target_replicas <= service.max_replicas


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_never_scale_down_with_a_down_metric_missing(
    scenario: Scenario,
) -> None:
    service, observation, proposal = scenario
    # Judged from what was observed, not from the proposal's own account of it.
    down_metrics = {c.metric for c in service.rules.scale_down_when}
    if down_metrics - set(observation.metrics):
        assert proposal.action != "scale_down"
        assert down_metrics - set(observation.metrics) <= set(proposal.missing_metrics)


@settings(max_examples=300, deadline=None)
@given(scenarios(current_in_bounds=False))
def test_action_agrees_with_target(scenario: Scenario) -> None:
    _, _, proposal = scenario
    if proposal.action == "hold":
        assert proposal.target_replicas == proposal.current_replicas
    elif proposal.action == "scale_up":
        assert proposal.target_replicas > proposal.current_replicas
    else:
        assert proposal.target_replicas < proposal.current_replicas
