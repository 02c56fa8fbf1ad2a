"""Runs every policy through every scenario: the benchmark's one entry point for the CLI and
the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from docktor.dev.bench.driver import EPOCH, DocktorController
from docktor.dev.bench.metrics import Metrics, measure
from docktor.dev.bench.reference import Oracle, Seed, hpa_behavior, keda_hpa, keda_hpa_cached
from docktor.dev.bench.scenario import Scenario
from docktor.dev.bench.simulate import DT, Controller, Run, simulate
from docktor.plan import ServicePlan
from docktor.policy.forecast.stage import learn_from_log
from docktor.spec import DocktorConfig, ServiceSpec
from docktor.values import PolicyMemory

ORACLE = "oracle"


@dataclass
class ScenarioResult:
    scenario: Scenario
    base_rates: list[float]
    runs: list[Run] = field(default_factory=list)
    metrics: list[Metrics] = field(default_factory=list)

    def oracle(self) -> Metrics | None:
        return next((m for m in self.metrics if m.policy == ORACLE), None)


def default_spec(scenario: Scenario) -> ServiceSpec:
    """docktor's defaults for a queue service: only name, backend and queue are given, plus
    the scenario's bounds (and its check interval when it names one). Whatever else docktor
    defaults to is what gets measured, so a change of defaults shows here."""
    data: dict[str, object] = {
        "name": "bench",
        "backend": "compose",
        "queue": {"kind": "nats", "stream": "JOBS", "consumer": "workers"},
        "min_replicas": scenario.min_replicas,
        "max_replicas": scenario.max_replicas,
    }
    if scenario.check_interval is not None:
        data["check_interval"] = scenario.check_interval
    return ServiceSpec.model_validate(data)


def predict_spec(scenario: Scenario) -> ServiceSpec:
    """docktor-default with `predict.enabled` and the scenario's start-up as predict.startup
    (the figure a live loop would be configured with); nothing else differs."""
    spec = default_spec(scenario)
    spec.predict = spec.predict.model_copy(update={"enabled": True, "startup": scenario.startup})
    return spec


def warm_predict(scenario: Scenario, rates: list[float]) -> DocktorController:
    """docktor-predict restarted beside the decision log of a run of the same load that ended
    as it starts: seeded from that log as a live loop is (predict.learn_from_log: the rate
    history and what one replica handles), nothing else carried over."""
    spec = ServicePlan.from_spec(predict_spec(scenario))
    before = DocktorController(
        "earlier run", spec, epoch=EPOCH - timedelta(seconds=len(rates) * DT)
    )
    simulate(
        before,
        rates,
        per_replica_rate=scenario.per_replica_rate,
        startup=scenario.startup,
        initial_replicas=scenario.initial_replicas,
    )
    seed = learn_from_log(spec, before.log)
    memory = PolicyMemory(forecast=seed.forecast, per_replica_rate=seed.per_replica_rate)
    return DocktorController("docktor-predict-warm", spec, memory=memory)


def controllers(
    scenario: Scenario, config: DocktorConfig | list[DocktorConfig] | None, rates: list[float]
) -> list[Controller]:
    low, high = scenario.min_replicas, scenario.max_replicas
    out: list[Controller] = [
        Seed(low, high),
        # KEDA + HPA as a ScaledObject runs by default, with KEDA's metric cache, and with the
        # HPA's v2 default behavior: the references docktor is compared with.
        keda_hpa(low, high),
        keda_hpa_cached(low, high),
        hpa_behavior(low, high),
        DocktorController("docktor-default", ServicePlan.from_spec(default_spec(scenario))),
        # The same defaults with predictive pre-scaling on: reactive vs predictive side by side.
        DocktorController("docktor-predict", ServicePlan.from_spec(predict_spec(scenario))),
        # ... and the same restarted with a decision log to learn from (warm start).
        warm_predict(scenario, rates),
    ]
    configs = config if isinstance(config, list) else [config] if config is not None else []
    for each in configs:
        # A config's services keep their own bounds and check interval: they are measured as
        # they would run.
        out += [
            DocktorController(f"config:{s.name}", ServicePlan.from_spec(s)) for s in each.services
        ]
    out.append(Oracle(low, high))
    return out


def run_scenario(
    scenario: Scenario, config: DocktorConfig | list[DocktorConfig] | None = None
) -> ScenarioResult:
    base = scenario.base_rates(DT)
    rates = scenario.rates(DT)
    result = ScenarioResult(scenario=scenario, base_rates=base)
    for controller in controllers(scenario, config, rates):
        run = simulate(
            controller,
            rates,
            per_replica_rate=scenario.per_replica_rate,
            startup=scenario.startup,
            initial_replicas=scenario.initial_replicas,
        )
        result.runs.append(run)
        result.metrics.append(measure(run, base))
    return result
