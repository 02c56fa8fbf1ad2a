"""Three gaps in the loop's story, each closed: a cancel that lands while the policy runs, an
operator's scale that lands mid-iteration, and replicas that die on their own between two
iterations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import LoopActivities
from docktor.loop.messages import EvaluateInput, ManualScale
from docktor.loop.worker import build_worker
from docktor.plan import LLMPlan
from docktor.values import Advice, AdviseInput, Proposal
from tests.workflow.conftest import (
    TASK_QUEUE,
    ScriptedWorld,
    cancel_and_wait,
    decisions_after,
    query_loop,
    service_spec,
    start,
    until,
)
from workflows import ServiceAutoscaler

POLL = 0.5


class Gated:
    """An activity held at the gate (when one is set) while the test acts."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self.running = 0

    async def held(self) -> None:
        if self.gate is not None:
            self.running += 1
            try:
                await self.gate.wait()
            finally:
                self.running -= 1


class GatedEvaluate(Gated):
    """The real policy, held at the gate while the test cancels the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.real = LoopActivities()

    @activity.defn(name="evaluate")
    async def evaluate(self, request: EvaluateInput) -> Proposal:
        await self.held()
        return await self.real.evaluate(request)


@pytest.fixture
async def gated_worker(
    env: WorkflowEnvironment, world: ScriptedWorld
) -> AsyncIterator[GatedEvaluate]:
    gated = GatedEvaluate()
    world.evaluate = gated.evaluate
    async with build_worker(env.client, TASK_QUEUE, world.activities()):
        yield gated


async def test_cancel_during_evaluate_stops_the_loop_with_a_stopped_decision(
    env: WorkflowEnvironment, world: ScriptedWorld, gated_worker: GatedEvaluate
) -> None:
    handle = await start(env.client, service_spec(check_interval=1))
    await decisions_after(env, handle, 1, step_seconds=POLL)
    gated_worker.gate = asyncio.Event()

    async def evaluating() -> bool:
        return gated_worker.running > 0

    await until(env, evaluating, step_seconds=POLL)
    # Without the fix the cancelled local activity fails the run: CANCELED, no `stopped`.
    final = await cancel_and_wait(env, handle)
    gated_worker.gate.set()
    assert final.last_decision is not None and final.last_decision.action == "stopped"
    decisions = await query_loop(env, handle, ServiceAutoscaler.decisions, 100)
    assert [d.sequence for d in decisions] == list(range(1, len(decisions) + 1))


class GatedAdvise(Gated):
    """A model that agrees with the rules, held at the gate: an iteration caught between
    looking and applying. (Observe and evaluate run in one workflow task as local activities,
    which no update interrupts; the model's call is an activity of its own.)"""

    @activity.defn(name="advise")
    async def advise(self, request: AdviseInput) -> Advice:
        await self.held()
        proposal = request.proposal
        return Advice(
            action=proposal.action, target_replicas=proposal.target_replicas, reason="agreed"
        )


async def test_manual_scale_mid_iteration_still_ends_the_iteration_in_a_decision(
    env: WorkflowEnvironment, world: ScriptedWorld
) -> None:
    world.backlog = 900  # the loop wants to scale up: 1 -> 3
    gated = GatedAdvise()
    async with build_worker(env.client, TASK_QUEUE, [*world.activities(), gated.advise]):
        spec = service_spec(check_interval=1, cooldown={"up": 0})
        handle = await start(env.client, spec, llm=LLMPlan(provider="dmr"))
        await decisions_after(env, handle, 1, step_seconds=POLL)
        gated.gate = asyncio.Event()

        async def advising() -> bool:
            return gated.running > 0

        await until(env, advising, step_seconds=POLL)
        iteration = (await query_loop(env, handle, ServiceAutoscaler.status)).iteration
        update = await handle.start_update(
            ServiceAutoscaler.scale_to,
            ManualScale(replicas=2, reason="load test", by="ana"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        manual = await asyncio.wait_for(update.result(), 30)
        gated.gate.set()
        gated.gate = None

        decisions = await decisions_after(env, handle, manual.sequence + 1, step_seconds=POLL)
        after = decisions[manual.sequence]  # the decision right after the operator's
        assert after.iteration == iteration, "the interrupted iteration recorded nothing"
        assert (after.action, after.current_replicas, after.target_replicas) == ("hold", 2, 2)
        assert "operator's count stands" in after.reason and "scale_up" in after.reason
        assert [d.sequence for d in decisions] == list(range(1, len(decisions) + 1))
        await cancel_and_wait(env, handle)


async def test_replicas_that_died_are_restored_and_the_decision_says_so(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    world.backlog = 100  # in the hold band: nothing but the loss would change the count
    handle = await start(env.client, service_spec(check_interval=1))
    await handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=4))
    seen = len(await decisions_after(env, handle, 2, step_seconds=POLL))
    world.replicas = 1  # three replicas die on their own

    decisions = await decisions_after(env, handle, seen + 1, step_seconds=POLL)
    restored = decisions[seen]
    assert (restored.action, restored.current_replicas, restored.target_replicas) == (
        "scale_up",
        1,
        4,
    )
    assert "3 of 4 replicas found missing (1 running): restoring 4" in restored.reason
    assert world.replicas == 4
    await cancel_and_wait(env, handle)


async def test_a_loop_scale_queued_behind_an_operators_scale_leaves_their_count(
    env: WorkflowEnvironment, world: ScriptedWorld, worker: Worker
) -> None:
    # Found by tests/faults/test_nats_outage.py: an iteration that looked while an operator's
    # scale was still running applied its stale target right after it (2 -> 1).
    world.backlog = 100  # in the hold band
    handle = await start(env.client, service_spec(check_interval=1, cooldown={"up": 0}))
    await decisions_after(env, handle, 1, step_seconds=POLL)

    world.apply_gate = asyncio.Event()  # the operator's scale is in flight...
    update = await handle.start_update(
        ServiceAutoscaler.scale_to,
        ManualScale(replicas=4, reason="load test"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )

    async def manual_applying() -> bool:
        return world.applying > 0

    await until(env, manual_applying, step_seconds=POLL)
    world.backlog = 900  # ...while the loop looks, sees 1 replica and wants 3
    looked = world.observe_attempts

    async def loop_looked() -> bool:
        return world.observe_attempts > looked

    await until(env, loop_looked, step_seconds=POLL)
    world.apply_gate.set()
    world.apply_gate = None
    manual = await asyncio.wait_for(update.result(), 30)

    decisions = await decisions_after(env, handle, manual.sequence + 1, step_seconds=POLL)
    after = decisions[manual.sequence]
    assert (after.action, after.target_replicas) == ("hold", 4), after
    assert "their count stands" in after.reason
    assert world.replicas == 4 and world.apply_calls == [4]
    await cancel_and_wait(env, handle)
