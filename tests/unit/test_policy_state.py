"""One policy entry point: the loop's evaluate activity, `what_if` and the control benchmark all
decide from LoopState.policy_state(), so none of them can leave out an input the loop keeps
(an operator's hold, the replicas it expects, the last scales)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import docktor.dev.bench.driver as bench_driver
from docktor.client.operate import dry_run
from docktor.dev.bench.driver import EPOCH, DocktorController, observation
from docktor.dev.bench.simulate import QueueView
from docktor.loop.activities import LoopActivities
from docktor.loop.messages import EvaluateInput, LoopState
from docktor.plan import ServicePlan
from docktor.policy import STAGES, decide
from docktor.spec import DocktorConfig, parse_config
from docktor.values import ManualHold, PolicyState, Proposal

NOW = EPOCH + timedelta(minutes=5)
CONFIG = """
project: shop
services:
  - name: worker
    backend: compose
    min_replicas: 1
    max_replicas: 10
    cooldown: {up: 0s, down: 0s}
    rules:
      scale_up_when:
        - {metric: queue.backlog, op: ">", value: 500}
      scale_down_when:
        - {metric: queue.backlog, op: "<", value: 50}
"""


def config() -> DocktorConfig:
    return parse_config(CONFIG, base_dir=Path("."))


def view(replicas: int, backlog: float) -> QueueView:
    """What the benchmark's simulated queue shows at NOW."""
    return QueueView(
        t=(NOW - EPOCH).total_seconds(),
        replicas=replicas,
        ready=replicas,
        undelivered=backlog,
        in_flight=0.0,
        arrived_total=1000.0,
        acked_total=1000.0 - backlog,
        arrival_rate=0.0,
        per_replica_rate=10.0,
    )


async def by_all_three(state: LoopState, seen: QueueView) -> list[Proposal]:
    """The proposal of the evaluate activity (given what the workflow sends), of what_if's
    decision and of the benchmark's controller, for the same observation and loop state."""
    cfg = config()
    plan = ServicePlan.from_spec(cfg.service("worker"))
    sample = observation(seen)
    request = EvaluateInput(service=plan, observation=sample, now=NOW, state=state.policy_state())
    activities = LoopActivities()
    try:
        evaluated = await activities.evaluate(request)
    finally:
        await activities.close()
    dry = dry_run(cfg, "worker", sample, state, None, NOW).proposal
    bench = DocktorController("docktor", plan)
    bench.state = state.model_copy(deep=True)
    # The controller answers with the target alone: the real decide, watched, gives the rest.
    recorded: list[Proposal] = []

    def watched(*args: Any) -> Proposal:
        proposal = decide(*args)
        recorded.append(proposal)
        return proposal

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench_driver, "decide", watched)
        target = bench.check(seen)
    assert [p.target_replicas for p in recorded] == [target]
    return [p.model_copy(update={"memory": None}) for p in (evaluated, dry, recorded[0])]


async def test_a_hold_in_the_loop_state_is_honoured_by_every_caller() -> None:
    # Calm: the policy alone would scale 6 -> 5 (no cooldowns); the operator holds 6.
    state = LoopState(
        replicas=6,
        hold=ManualHold(replicas=6, until=NOW + timedelta(minutes=10), by="ana"),
    )
    proposals = await by_all_three(state, view(replicas=6, backlog=0))
    for proposal in proposals:
        assert (proposal.action, proposal.target_replicas) == ("hold", 6), proposal.reason
        assert proposal.reason.startswith("held by manual scale until 00:15:00 UTC")
        assert "the policy wanted scale_down to 5" in proposal.reason
    assert proposals[0] == proposals[1] == proposals[2]


async def test_replicas_the_loop_expects_are_restored_by_every_caller() -> None:
    # The loop set 6 and sees 4: two died on their own; nothing else wants a change.
    state = LoopState(replicas=6)
    proposals = await by_all_three(state, view(replicas=4, backlog=200))
    for proposal in proposals:
        assert (proposal.action, proposal.target_replicas) == ("scale_up", 6), proposal.reason
        assert proposal.reason.startswith("2 of 6 replicas found missing (4 running)")
    assert proposals[0] == proposals[1] == proposals[2]


async def test_without_a_hold_all_three_agree_with_decide_itself() -> None:
    state = LoopState(replicas=6, last_scale_down_at=NOW - timedelta(seconds=5))
    proposals = await by_all_three(state, view(replicas=6, backlog=0))
    plan = ServicePlan.from_spec(config().service("worker"))
    direct = decide(plan, observation(view(6, 0)), state.policy_state(), NOW)
    assert direct.action == "scale_down"
    for proposal in proposals:
        assert proposal == direct.model_copy(update={"memory": None})


def test_an_evaluation_of_an_earlier_release_decodes_into_the_state() -> None:
    """Releases before PolicyState sent its fields flat beside the observation."""
    taken = datetime(2026, 1, 1, 12, tzinfo=UTC)
    flat = {
        "service": {"name": "worker"},
        "observation": {"taken_at": taken.isoformat(), "replicas": 3},
        "previous": {"taken_at": (taken - timedelta(seconds=5)).isoformat(), "replicas": 3},
        "now": taken.isoformat(),
        "last_scale_up_at": (taken - timedelta(seconds=60)).isoformat(),
        "last_scale_down_at": None,
        "memory": {"per_replica_rate": 12.5},
        "expected_replicas": 4,
        "hold": {"replicas": 4, "until": (taken + timedelta(minutes=1)).isoformat()},
    }
    request = EvaluateInput.model_validate(flat)
    state = request.state
    assert state.previous is not None and state.previous.taken_at == taken - timedelta(seconds=5)
    assert state.last_scale_up_at == taken - timedelta(seconds=60)
    assert state.memory.per_replica_rate == 12.5
    assert state.expected_replicas == 4
    assert state.hold is not None and state.hold.replicas == 4
    # ... and one of this release round-trips as it is.
    assert EvaluateInput.model_validate_json(request.model_dump_json()) == request
    # The oldest: no expected count, no hold, no memory.
    oldest = EvaluateInput.model_validate({k: flat[k] for k in ("service", "observation", "now")})
    assert oldest.state == PolicyState()


def test_the_stages_run_in_the_documented_order() -> None:
    assert [stage.name for stage in STAGES] == [
        "pre-checks",
        "recommend",
        "pre-scale",
        "missing-data",
        "stabilise",
        "limit",
        "bounds",
        "restore",
        "hold",
    ]
    # The operator's hold and the restore overrule whatever came before, even a pre-check.
    assert [stage.name for stage in STAGES if stage.always] == ["restore", "hold"]
    # The rules carry their own missing-data guard; this one is for a model's recommendation.
    assert [stage.name for stage in STAGES if stage.settle_only] == ["missing-data"]


def test_the_policy_imports_neither_the_user_schema_nor_temporal() -> None:
    package = Path(__file__).resolve().parents[2] / "docktor" / "policy"
    offending = []
    for module in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.startswith(("docktor.spec", "temporalio")):
                    offending.append(f"{module.relative_to(package)}: {name}")
    assert not offending
