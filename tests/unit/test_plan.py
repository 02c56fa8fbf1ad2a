"""The plan is the loop's wire format: every payload a loop ever recorded decodes into it, a
plan built from a config survives the trip through JSON, and an older payload means what it
meant when it was written."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter

from docktor import names
from docktor.loop.messages import (
    ApplyInput,
    AutoscalerInput,
    EvaluateInput,
    ObserveInput,
    RecordInput,
    SpecUpdate,
)
from docktor.plan import LLMPlan, QueueBlock, ServicePlan
from docktor.sources import MetricConfigError, queue_block
from docktor.sources.nats import NatsQueueSpec
from docktor.spec import LLMSpec, ServiceSpec, load_config
from docktor.values import AdviseInput

REPO = Path(__file__).resolve().parents[2]
HISTORIES = sorted((REPO / "tests" / "replay" / "histories").glob("*.json"))
EXAMPLES = sorted(REPO.glob("examples/*/docktor*.yaml"))
ACTIVITY_INPUTS: dict[str, type[BaseModel]] = {
    names.OBSERVE: ObserveInput,
    names.EVALUATE: EvaluateInput,
    names.ADVISE: AdviseInput,
    names.APPLY: ApplyInput,
    names.RECORD: RecordInput,
}
CONVERTER = pydantic_data_converter.payload_converter


def recorded_inputs(path: Path) -> list[tuple[str, Any, type[BaseModel]]]:
    """(where, payload, its type) for the workflow's input, each continue-as-new's input, every
    scheduled activity's input and every accepted update_spec in one recorded history."""
    history = WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))
    found: list[tuple[str, Any, type[BaseModel]]] = []
    for event in history.events:
        where = f"{path.name} event {event.event_id}"
        if event.HasField("workflow_execution_started_event_attributes"):
            for payload in event.workflow_execution_started_event_attributes.input.payloads:
                found.append((where, payload, AutoscalerInput))
        elif event.HasField("workflow_execution_continued_as_new_event_attributes"):
            for (
                payload
            ) in event.workflow_execution_continued_as_new_event_attributes.input.payloads:
                found.append((where, payload, AutoscalerInput))
        elif event.HasField("workflow_execution_update_accepted_event_attributes"):
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name == names.UPDATE_SPEC:
                for payload in request.input.args.payloads:
                    found.append((where, payload, SpecUpdate))
        elif event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            as_type = ACTIVITY_INPUTS[scheduled.activity_type.name]
            for payload in scheduled.input.payloads:
                found.append((where, payload, as_type))
    return found


def agrees(written: Any, decoded: Any, where: str) -> None:
    """Every value the payload held is in the decoded plan unchanged (fields it lacks were filled
    in; none it had was dropped or altered)."""
    if isinstance(written, dict):
        for key, value in written.items():
            assert key in decoded, f"{where}.{key}: dropped"
            agrees(value, decoded[key], f"{where}.{key}")
    elif isinstance(written, list):
        assert len(written) == len(decoded), where
        for index, (a, b) in enumerate(zip(written, decoded, strict=True)):
            agrees(a, b, f"{where}[{index}]")
    else:
        assert written == decoded, f"{where}: {written!r} became {decoded!r}"


def test_there_are_recordings_with_every_activity() -> None:
    kinds = {t for path in HISTORIES for _, _, t in recorded_inputs(path)}
    # observe and evaluate run as local activities: their inputs are not in history.
    assert kinds >= {AutoscalerInput, AdviseInput, ApplyInput, RecordInput}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
def test_every_recorded_payload_decodes_into_the_plan(path: Path) -> None:
    inputs = recorded_inputs(path)
    assert inputs
    for where, payload, as_type in inputs:
        [decoded] = CONVERTER.from_payloads([payload], [as_type])
        assert isinstance(decoded, as_type)
        written = json.loads(payload.data)
        plans = [getattr(decoded, name, None) for name in ("service", "llm")]
        for name, plan in zip(("service", "llm"), plans, strict=True):
            if name not in written:
                continue
            assert isinstance(plan, ServicePlan if name == "service" else LLMPlan), where
            agrees(written[name], plan.model_dump(mode="json"), f"{where} {name}")
            # A loop ran on it, so it is one a loop can run.
            assert plan.problems() == [], where
        # And what this release writes of it decodes to the same thing.
        [again] = CONVERTER.from_payloads(CONVERTER.to_payloads([decoded]), [as_type])
        assert again == decoded, where


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(REPO)) for p in EXAMPLES])
def test_the_plan_of_each_example_round_trips_through_json(path: Path) -> None:
    config = load_config(path)
    assert config.services
    for spec in config.services:
        plan = ServicePlan.from_spec(spec)
        assert plan.problems() == []
        request = AutoscalerInput(
            project=config.project or "", service=plan, llm=LLMPlan.from_spec(config.llm)
        )
        [decoded] = CONVERTER.from_payloads(CONVERTER.to_payloads([request]), [AutoscalerInput])
        assert decoded == request
        assert decoded.service.model_dump() == plan.model_dump()
        # Same names, same values as the resolved spec (the queue block with all its fields).
        assert plan.model_dump(exclude={"version", "stop_grace_period_set"}) == spec.model_dump()
        if spec.queue is not None:
            assert decoded.service.queue is not None
            assert decoded.service.queue.model_dump() == spec.queue.model_dump()


def service(**fields: Any) -> dict[str, Any]:
    return {"name": "consumer", **fields}


STEP_RULES = {"scale_up_when": [{"metric": "queue.backlog", "op": ">", "value": 500}]}


def test_a_step_payload_without_the_later_fields_means_what_it_meant() -> None:
    # Written before policies, windows and metrics_window: the rules, their cooldowns, and no
    # scale-down window (the step rules never had one).
    plan = ServicePlan.model_validate(service(rules=STEP_RULES))
    assert plan.policy == "step"
    assert (plan.cooldown.up, plan.cooldown.down) == (30.0, 120.0)
    assert plan.check_interval == 15.0 and plan.metrics_window == 15.0 and plan.window == 15.0
    assert plan.behavior.down.window == 0.0 and plan.behavior.up.window == 0.0
    assert plan.stop_grace_period_set  # as every worker read such a payload
    # What was written stays as written.
    given = ServicePlan.model_validate(
        service(rules=STEP_RULES, check_interval=5, cooldown={"up": 1, "down": 2})
    )
    assert (given.check_interval, given.window, given.cooldown.down) == (5.0, 5.0, 2.0)


def test_a_target_payload_without_the_later_fields_means_what_it_meant() -> None:
    plan = ServicePlan.model_validate(
        service(queue={"kind": "nats", "stream": "S", "consumer": "w"})
    )
    assert plan.policy == "target"
    assert plan.target == {"queue.backlog_per_replica": 100.0}
    assert (plan.cooldown.up, plan.cooldown.down) == (0.0, 0.0)
    assert plan.check_interval == 4.0 and plan.window == 4.0
    assert plan.behavior.down.window == 90.0
    assert plan.metric_names() == {"queue.backlog", "queue.rate_in", "queue.rate_out"}


def test_the_plan_is_what_the_spec_resolved() -> None:
    spec = ServiceSpec.model_validate(
        {"name": "c", "queue": {"stream": "S", "consumer": "w"}, "predict": {"enabled": True}}
    )
    plan = ServicePlan.from_spec(spec)
    assert plan.policy == spec.policy == "target"
    assert plan.window == spec.metrics_window == spec.check_interval
    assert plan.metric_names() == {"queue.backlog", "queue.rate_in", "queue.rate_out"}
    assert plan.lead_s() == spec.predict.lead_for(spec.check_interval)
    assert plan.predict.lead_for(7.0) == spec.predict.lead_for(7.0)


def test_stop_grace_period_is_carried_with_whether_the_file_set_it() -> None:
    unset = ServicePlan.from_spec(ServiceSpec(name="c"))
    set_ = ServicePlan.from_spec(ServiceSpec(name="c", stop_grace_period=3))
    assert not unset.stop_grace_period_set and set_.stop_grace_period_set
    assert set_.stop_grace_period == 3.0
    # Through JSON, as a worker receives it.
    [decoded] = CONVERTER.from_payloads(CONVERTER.to_payloads([unset]), [ServicePlan])
    assert not decoded.stop_grace_period_set


def test_unknown_fields_are_dropped_and_the_queue_block_keeps_its_own() -> None:
    plan = ServicePlan.model_validate(
        service(
            warmup="30s",
            cooldown={"up": 1, "jitter": 0.2},
            queue={"kind": "kafka", "brokers": ["b:9092"], "topic": "t"},
        )
    )
    assert "warmup" not in plan.model_dump() and "jitter" not in plan.cooldown.model_dump()
    assert isinstance(plan.queue, QueueBlock)
    assert plan.queue.model_dump() == {
        "kind": "kafka",
        "metrics": [],
        "brokers": ["b:9092"],
        "topic": "t",
    }


def test_a_source_reads_its_block_and_ignores_fields_it_does_not_know() -> None:
    plan = ServicePlan.model_validate(
        service(queue={"kind": "nats", "stream": "S", "consumer": "w", "batch": 5})
    )
    queue = queue_block(plan, NatsQueueSpec)
    assert (queue.stream, queue.consumer, queue.url) == ("S", "w", "nats://127.0.0.1:4222")
    with pytest.raises(MetricConfigError, match=r"^services\.consumer\.queue: stream"):
        queue_block(ServicePlan.model_validate(service(queue={"consumer": "w"})), NatsQueueSpec)
    with pytest.raises(MetricConfigError, match="no queue"):
        queue_block(ServicePlan.model_validate(service()), NatsQueueSpec)


def test_a_payload_of_the_wrong_shape_does_not_decode() -> None:
    for bad in (
        service(max_replicas="many"),
        service(check_interval=math.inf),
        service(policy="guess"),
        {"min_replicas": 1},  # no name
    ):
        with pytest.raises(ValidationError):
            ServicePlan.model_validate(bad)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"check_interval": 1e12}, "check_interval: must be at most 366 days"),
        ({"check_interval": 0}, "check_interval: must be a duration of more than 0"),
        ({"cooldown": {"down": -1}}, "cooldown.down: must be a duration of 0 or more"),
        ({"approval_timeout": 1e300}, "approval_timeout: must be at most 366 days"),
        ({"behavior": {"down": {"window": 1e10}}}, "behavior.down.window: must be at most"),
        ({"behavior": {"up": {"limit": {"period": 0}}}}, "behavior.up.limit.period"),
        ({"behavior": {"up": {"limit": {"replicas": 0}}}}, "behavior.up.limit.replicas"),
        ({"min_replicas": 9, "max_replicas": 2}, "max_replicas: must be >= min_replicas (9)"),
        ({"max_replicas": 2**31}, f"max_replicas: must be at most {2**31 - 1}"),
        ({"min_replicas": -1}, "min_replicas: must be at least 0"),
        ({"scale_up_by": 0}, "scale_up_by: must be at least 1"),
        ({"target": {"cpu.avg_pct": 0}}, "target.cpu.avg_pct: must be more than 0"),
        ({"tolerance": 1}, "tolerance: must be less than 1"),
        ({"rate": {"smoothing": 0}}, "rate.smoothing: must be more than 0"),
        ({"rate": {"drain_within": 0}}, "rate.drain_within"),
        ({"predict": {"enabled": True}}, "predict: needs a queue"),
        ({"predict": {"min_cycles": 1}}, "predict.min_cycles: must be at least 2"),
        ({"fallback": {"replicas": -1}}, "fallback.replicas: must be at least 0"),
        ({"policy": "target"}, "target: required for policy target"),
        ({"name": "a/b"}, "name: 'a/b' is not a service name"),
        ({"name": "x" * 64}, "name: is longer than 63 characters"),
        ({"command": []}, "command: must name a program"),
        ({"version": 2}, "version: 2 is newer than this worker's (1)"),
    ],
)
def test_problems_name_what_a_loop_cannot_run(fields: dict[str, Any], problem: str) -> None:
    plan = ServicePlan.model_validate(service(rules=STEP_RULES, **fields))
    found = plan.problems()
    assert any(line.startswith(problem) for line in found), found
    assert all("\n" not in line for line in found)


def test_a_plan_a_loop_can_run_has_no_problems() -> None:
    assert ServicePlan.model_validate(service(rules=STEP_RULES)).problems() == []
    assert LLMPlan().problems() == [] and LLMPlan.none().problems() == []
    assert LLMPlan(timeout_s=1e12).problems()[0].startswith("timeout_s: must be at most 366")
    assert LLMPlan(max_step=0).problems() == ["max_step: must be at least 1, not 0"]


def test_the_llm_plan_carries_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-never-in-history")
    plan = LLMPlan.from_spec(LLMSpec(provider="openai", model="gpt-4o-mini"))
    text = plan.model_dump_json()
    assert "sk-secret" not in text
    assert plan.base_url == "https://api.openai.com/v1"
    # A plan built by hand gets its provider's URL, as every release filled it in.
    assert LLMPlan(provider="none").base_url == LLMSpec(provider="none").base_url


def test_an_update_carries_plans() -> None:
    update = SpecUpdate.model_validate(
        {"service": service(rules=STEP_RULES), "llm": {"provider": "none"}}
    )
    assert isinstance(update.service, ServicePlan) and isinstance(update.llm, LLMPlan)
