"""Record the histories that tests/replay/test_replay.py replays: real loops on a real Temporal
dev server, driven through every path of the workflow (scale up, scale down, hold, pause, manual
scale, a manual scale's hold, an iteration overlapping a manual scale, an iteration overtaken by
one, an update before the run begins, approval granted/refused/lapsed, LLM fallback,
continue-as-new, cancel).

    .venv/bin/python -m tests.replay.record TAG  # writes tests/replay/histories/*.TAG.*.json
    .venv/bin/python -m tests.replay.record TAG manual_hold_resume   # only these scenarios

A TAG is a generation: the runs one release begins. The histories kept are one recording of
every scenario for each generation of runs that can still be open. A release that changes the
workflow's commands records its own generation beside the others; when a change would stop an
older generation from replaying, guard the new code path with `workflow.patched("<change-id>")`
(old runs take the old path, new runs the new one). A generation's files are deleted when its
runs can no longer be open, as a patch is retired (docs/upgrading.md, "Workflow patches").
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from docktor.dev.embedded import start_temporal
from docktor.loop.messages import AutoscalerInput, LoopState, ManualScale, PauseRequest, Verdict
from docktor.loop.worker import build_worker
from docktor.plan import LLMPlan, ServicePlan
from docktor.policy import hold as policy_hold
from docktor.values import Advice, AdviseInput
from tests.workflow.conftest import TASK_QUEUE, ScriptedWorld, service_spec, start
from workflows import ServiceAutoscaler

HISTORIES = Path(__file__).parent / "histories"
TICK = 0.3  # check_interval of the recorded loops, in real seconds
DEADLINE = 30.0


class RecordedWorld(ScriptedWorld):
    """The scripted world, and a model server that is unreachable: every decision falls back
    to the rules. A scenario may hold the model's answer until it sets `advise_gate`."""

    def __init__(self) -> None:
        super().__init__()
        self.advise_gate: asyncio.Event | None = None
        self.advised = 0

    @activity.defn(name="advise")
    async def advise(self, request: AdviseInput) -> Advice:
        self.advised += 1
        if self.advise_gate is not None:
            await self.advise_gate.wait()
        raise ApplicationError("model server unreachable", type="Unavailable", non_retryable=True)


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not await condition():
        if loop.time() > deadline:
            raise TimeoutError(f"not within {DEADLINE}s: {what}")
        await asyncio.sleep(0.05)


async def decided(handle: WorkflowHandle, count: int) -> None:
    async def enough() -> bool:
        return len(await handle.query(ServiceAutoscaler.decisions, 1000)) >= count

    await wait_for(enough, f"{count} decisions of {handle.id}")


async def scale_up_down_hold(client: Client, world: RecordedWorld) -> list[WorkflowHandle]:
    world.replicas, world.backlog = 1, 900
    spec = service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    handle = await start(client, spec)
    await decided(handle, 2)  # 1 -> 3 -> 5
    world.backlog = 100
    await decided(handle, 4)  # hold, hold
    world.backlog = 0
    await decided(handle, 6)  # 5 -> 4 -> 3
    await handle.cancel()
    await handle.result()
    return [handle]


async def operator_controls(client: Client, world: RecordedWorld) -> list[WorkflowHandle]:
    world.replicas, world.backlog = 2, 100
    spec = service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    handle = await start(client, spec)
    await decided(handle, 1)
    await handle.execute_update(ServiceAutoscaler.pause, PauseRequest(reason="deploy", by="rec"))
    world.backlog = 900
    await decided(handle, 3)  # paused: holds
    await handle.execute_update(ServiceAutoscaler.scale_to, ManualScale(replicas=4, by="rec"))
    await handle.execute_update(ServiceAutoscaler.resume)
    await handle.signal(ServiceAutoscaler.nudge)
    await decided(handle, 6)
    await handle.cancel()
    await handle.result()
    return [handle]


async def approvals(client: Client, world: RecordedWorld) -> list[WorkflowHandle]:
    world.replicas, world.backlog = 1, 900
    spec = service_spec(
        check_interval=TICK, cooldown={"up": 0, "down": 0}, approval="manual", approval_timeout=1
    )
    handle = await start(client, spec)

    async def pending() -> bool:
        status = await handle.query(ServiceAutoscaler.status)
        return status.pending_approval is not None and status.pending_approval.verdict is None

    await wait_for(pending, "a decision awaiting approval")
    await handle.execute_update(ServiceAutoscaler.approve, Verdict(by="rec", reason="ok"))
    await wait_for(pending, "a second decision awaiting approval")
    await handle.execute_update(ServiceAutoscaler.reject, Verdict(by="rec", reason="no"))
    await wait_for(pending, "a third decision awaiting approval")

    # ... which lapses after approval_timeout: an `expired` decision.
    async def expired() -> bool:
        decisions = await handle.query(ServiceAutoscaler.decisions, 1000)
        return any(d.action == "expired" for d in decisions)

    await wait_for(expired, "an expired approval")
    await handle.cancel()
    await handle.result()
    return [handle]


async def llm_fallback(client: Client, world: RecordedWorld) -> list[WorkflowHandle]:
    world.replicas, world.backlog = 1, 900
    spec = service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    handle = await start(client, spec, llm=LLMPlan(provider="dmr"))
    await decided(handle, 2)
    await handle.cancel()
    await handle.result()
    return [handle]


async def continue_as_new(client: Client, world: RecordedWorld) -> list[WorkflowHandle]:
    world.replicas, world.backlog = 1, 900
    spec = service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    handle = await start(client, spec, iterations_per_run=2)
    await decided(handle, 5)
    first = client.get_workflow_handle(handle.id, run_id=handle.first_execution_run_id)
    await handle.cancel()
    latest = client.get_workflow_handle(handle.id)
    await latest.result()
    return [first, latest]


async def manual_hold(client: Client, world: RecordedWorld) -> list[WorkflowHandle]:
    """A manual scale held against the rules, across continue-as-new; a second scale replaces
    the hold, `resume` ends it, and the loop scales on its own again."""
    world.replicas, world.backlog = 1, 900
    spec = service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    handle = await start(client, spec, iterations_per_run=3)
    await decided(handle, 1)
    first = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=2, by="rec", hold_s=3600)
    )
    await decided(handle, first.sequence + 4)  # held at 2 while the rules want more
    second = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=3, by="rec", hold_s=3600)
    )
    await decided(handle, second.sequence + 1)
    await handle.execute_update(ServiceAutoscaler.resume)
    await decided(handle, second.sequence + 3)  # up again: 3 -> 5
    runs = {d.run_id for d in await handle.query(ServiceAutoscaler.decisions, 1000)}
    await handle.cancel()
    await client.get_workflow_handle(handle.id).result()
    return [client.get_workflow_handle(handle.id, run_id=run) for run in sorted(runs)]


async def manual_in_flight(client: Client, world: RecordedWorld) -> list[WorkflowHandle]:
    """An iteration looks while an operator's scale is still running: its stale target is
    not applied after it ("their count stands"), the `manual-scale-in-flight-wins` path."""
    world.replicas, world.backlog = 1, 100
    spec = service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    handle = await start(client, spec)
    await decided(handle, 1)
    world.apply_gate = asyncio.Event()  # the operator's scale is in flight...
    update = await handle.start_update(
        ServiceAutoscaler.scale_to,
        ManualScale(replicas=4, by="rec"),
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )

    async def applying() -> bool:
        return world.applying > 0

    await wait_for(applying, "the operator's scale applying")
    world.backlog = 900  # ...while the loop looks, sees 1 replica and wants 3
    looked = world.observe_attempts

    async def loop_looked() -> bool:
        return world.observe_attempts > looked

    await wait_for(loop_looked, "an iteration looking during the operator's scale")
    world.apply_gate.set()
    world.apply_gate = None
    manual = await update.result()
    await decided(handle, manual.sequence + 2)
    await handle.cancel()
    await handle.result()
    return [handle]


async def update_in_first_task(client: Client, world: RecordedWorld) -> list[WorkflowHandle]:
    """`resume` of a held count in a run's very first workflow task, before run() begins: as
    right after a continue-as-new, whose new run carries the memo and the hold. An update in
    the first task runs its handler before the run's first line."""
    world.replicas, world.backlog = 2, 100
    spec = service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    now = datetime.now(UTC)
    plan = ServicePlan.from_spec(spec)
    state = LoopState(replicas=2, hold=policy_hold.start(plan, 2, 3600, now, "rec"))
    request = AutoscalerInput(
        project="test",
        service=plan,
        journal_path="/unused/decisions.jsonl",
        state=state,
        search_attributes=False,
    )
    memo = {
        "replicas": 2,
        "last_action": None,
        "last_reason": None,
        "paused": False,
        "bounds": f"{spec.min_replicas}..{spec.max_replicas}",
    }
    start_op = WithStartWorkflowOperation(
        ServiceAutoscaler.run,
        request,
        id=f"docktor-record-first-task-{now:%H%M%S%f}",
        task_queue=TASK_QUEUE,
        memo=memo,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    await client.execute_update_with_start_workflow(
        ServiceAutoscaler.resume, start_workflow_operation=start_op
    )
    handle = await start_op.workflow_handle()
    await decided(handle, 2)
    await handle.cancel()
    await handle.result()
    return [handle]


async def overridden_iteration(client: Client, world: RecordedWorld) -> list[WorkflowHandle]:
    """An operator scales while an iteration waits for the model: the iteration's proposal is
    not applied, and it records a hold saying the operator's count stands."""
    world.replicas, world.backlog = 1, 900
    world.advise_gate = asyncio.Event()
    spec = service_spec(check_interval=TICK, cooldown={"up": 0, "down": 0})
    handle = await start(client, spec, llm=LLMPlan(provider="dmr"))

    async def asking() -> bool:
        return world.advised > 0

    await wait_for(asking, "an iteration asking the model")
    manual = await handle.execute_update(
        ServiceAutoscaler.scale_to, ManualScale(replicas=2, by="rec", hold_s=0)
    )
    world.advise_gate.set()
    world.advise_gate = None
    await decided(handle, manual.sequence + 1)
    overridden = (await handle.query(ServiceAutoscaler.decisions, 1000))[manual.sequence]
    if "the operator's count stands" not in overridden.reason:
        raise AssertionError(f"not the overridden iteration's hold: {overridden}")
    await handle.cancel()
    await handle.result()
    return [handle]


SCENARIOS = {
    "scale_up_down_hold_cancel": scale_up_down_hold,
    "pause_manual_resume_nudge": operator_controls,
    "approval_granted_refused_lapsed": approvals,
    "llm_fallback": llm_fallback,
    "continue_as_new": continue_as_new,
    "manual_hold_resume": manual_hold,
    "manual_in_flight": manual_in_flight,
    "update_in_first_task": update_in_first_task,
    "overridden_iteration": overridden_iteration,
}


async def record(tag: str, only: list[str] | None = None) -> None:
    HISTORIES.mkdir(parents=True, exist_ok=True)
    server = start_temporal(Path(tempfile.mkdtemp(prefix="docktor-record-")))
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            world = RecordedWorld()
            async with build_worker(client, TASK_QUEUE, [*world.activities(), world.advise]):
                handles = await scenario(client, world)
            for index, handle in enumerate(handles):
                history = await handle.fetch_history()
                path = HISTORIES / f"{name}.{tag}.{index}.json"
                path.write_text(history.to_json() + "\n", encoding="utf-8")
                print(f"{path}: {len(history.events)} events")
    finally:
        server.stop()


if __name__ == "__main__":
    # A tag per generation (the release, or the change it brings), so new recordings land
    # beside the old ones: the old histories are what runs begun by older releases look like.
    if len(sys.argv) < 2 or not sys.argv[1].isidentifier() or set(sys.argv[2:]) - set(SCENARIOS):
        sys.exit(
            "usage: python -m tests.replay.record TAG [SCENARIO...]   (TAG: letters, digits, _; "
            f"scenarios: {', '.join(SCENARIOS)})"
        )
    asyncio.run(record(sys.argv[1], sys.argv[2:]))
